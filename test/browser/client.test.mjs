// The web client in a real browser: two people, each in a browser context
// of their own, use GoChat from the page alone. Run by ./run (make
// check-browser), which starts PostgreSQL, Redis and the server.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';

import {
	BASE, LIMIT, PHONE, createRoom, joinRoom, login, message, newRoom,
	online, register, say, shot, tid, unique, useBrowser, workerPids,
} from './lib.mjs';

const { newPerson } = useBrowser();

describe('accounts', () => {
	test('a visitor sees the login screen and can switch to register', LIMIT,
	    async () => {
		const v = await newPerson();
		await tid(v.page, 'auth-view').waitFor();
		await tid(v.page, 'login-form').waitFor();
		await shot(v.page, 'login');
		await tid(v.page, 'show-register').click();
		await tid(v.page, 'register-form').waitFor();
		await v.context.close();
	});

	test('register, log out, log in again', LIMIT, async () => {
		const a = await register(await newPerson(), unique('ann'));
		await tid(a.page, 'nav-logout').click();
		await tid(a.page, 'login-form').waitFor();
		assert.equal((await a.page.request.get(BASE + '/me')).status(), 401,
		    'logging out must end the session');
		await login(a, a.username);
		await tid(a.page, 'current-user').filter({ hasText: a.username })
		    .waitFor();
		await a.context.close();
	});

	test('API errors are shown as a person can read them', LIMIT, async () => {
		const a = await register(await newPerson(), unique('dup'));
		await tid(a.page, 'nav-logout').click();
		await tid(a.page, 'login-form').waitFor();
		// The same username again: 409, and the page says what is taken.
		await a.page.goto(BASE + '/#/register');
		await tid(a.page, 'register-username').fill(a.username);
		await tid(a.page, 'register-email').fill(`other${a.username}@example.org`);
		await tid(a.page, 'register-password').fill('correct horse');
		await tid(a.page, 'register-submit').click();
		await tid(a.page, 'error').filter({ hasText: /username/i }).waitFor();
		// A wrong password: 401, said in words.
		await login(a, a.username, 'wrong password');
		await tid(a.page, 'error').filter({ hasText: /password/i }).waitFor();
		await shot(a.page, 'login-error');
		assert.equal(await tid(a.page, 'current-user').count(), 0);
		await a.context.close();
	});

	test('deleting the account asks first, then removes it', LIMIT, async () => {
		const a = await register(await newPerson(), unique('del'));
		await tid(a.page, 'current-user').click();
		await tid(a.page, 'delete-account').click();
		await tid(a.page, 'confirm-dialog').waitFor();
		await tid(a.page, 'confirm-no').click();
		await tid(a.page, 'confirm-dialog').waitFor({ state: 'hidden' });
		assert.equal((await a.page.request.get(BASE + '/me')).status(), 200,
		    'cancelling must keep the account');
		await tid(a.page, 'delete-account').click();
		await tid(a.page, 'confirm-yes').click();
		await tid(a.page, 'auth-view').waitFor();
		await login(a, a.username);
		await tid(a.page, 'error').waitFor();
		assert.equal(await tid(a.page, 'current-user').count(), 0,
		    'a deleted account must not log in');
		await a.context.close();
	});
});

describe('chat', () => {
	let alice, bob;
	const room = unique('room');

	before(async () => {
		alice = await register(await newPerson(), unique('alice'));
		bob = await register(await newPerson(), unique('bob'));
	}, LIMIT);

	test('two people create and join a room and talk', LIMIT, async () => {
		await createRoom(alice, room, 'Coffee corner');
		await joinRoom(alice, room);
		await joinRoom(bob, room);
		// Each sees the other arrive and in the member list.
		await tid(alice.page, 'chat-notice').filter({
			hasText: `${bob.username} joined` }).waitFor();
		for (const [p, other] of [[alice, bob], [bob, alice]])
			await p.page.locator(`[data-testid="chat-member"]` +
			    `[data-user-id="${other.id}"]`).waitFor();
		await say(alice, 'Hello Bob!');
		await say(bob, 'Hi Alice, coffee?');
		for (const p of [alice, bob]) {
			await message(p, 'Hello Bob!').waitFor();
			await message(p, 'Hi Alice, coffee?').waitFor();
		}
		const who = await message(bob, 'Hello Bob!').getByTestId('msg-user')
		    .textContent();
		assert.match(who, new RegExp(alice.username));
		// The room list counts both of them.
		await tid(alice.page, 'chat-input').fill('');
		await shot(alice.page, 'chat');
		const phone = await newPerson(PHONE);
		await login(phone, bob.username);
		await tid(phone.page, 'current-user').waitFor();
		await joinRoom(phone, room);
		await message(phone, 'Hi Alice, coffee?').waitFor();
		await shot(phone.page, 'chat-phone');
		await phone.context.close();
	});

	test('the room list shows live client counts', LIMIT, async () => {
		const c = await register(await newPerson(), unique('carol'));
		await tid(c.page, 'nav-rooms').click();
		const count = c.page.locator(`[data-testid="room-item"]` +
		    `[data-room-id="${room}"] [data-testid="room-clients"]`);
		await count.filter({ hasText: /^\s*2\s*$/ }).waitFor();
		await shot(c.page, 'rooms');
		await tid(bob.page, 'chat-back').click();
		await count.filter({ hasText: /^\s*1\s*$/ }).waitFor();
		await joinRoom(bob, room);
		await count.filter({ hasText: /^\s*2\s*$/ }).waitFor();
		await c.context.close();
	});

	test('leaving is announced', LIMIT, async () => {
		const d = await register(await newPerson(), unique('dave'));
		await joinRoom(d, room);
		await tid(alice.page, 'chat-notice').filter({
			hasText: `${d.username} joined` }).waitFor();
		await d.context.close();
		await tid(alice.page, 'chat-notice').filter({
			hasText: `${d.username} left` }).waitFor();
		await alice.page.locator(`[data-testid="chat-member"]` +
		    `[data-user-id="${d.id}"]`).waitFor({ state: 'detached' });
	});

	test('an HTML payload is shown as text, never run', LIMIT, async () => {
		const evil = '<img src=x onerror="window.pwned=1"><b>bold</b>' +
		    '<script>window.pwned=2</script>';
		await say(bob, evil);
		for (const p of [alice, bob]) {
			const m = message(p, evil);
			await m.waitFor();
			assert.equal(await m.getByTestId('msg-content').textContent(),
			    evil);
			assert.equal(await tid(p.page, 'chat-messages')
			    .locator('img, b, script').count(), 0,
			    'the payload became elements');
			assert.equal(await p.page.evaluate(() => window.pwned),
			    undefined, 'the payload ran');
		}
	});

	test('history is shown on joining, and older pages on demand', LIMIT,
	    async () => {
		const e = await register(await newPerson(), unique('erin'));
		await joinRoom(e, room);
		await message(e, 'Hello Bob!').waitFor();
		await message(e, 'Hi Alice, coffee?').waitFor();
		const ids = await tid(e.page, 'chat-message').evaluateAll((els) =>
		    els.map((x) => Number(x.dataset.id)));
		assert.deepEqual(ids, [...ids].sort((x, y) => x - y),
		    'history must be oldest first');
		await e.context.close();
	});

	test('the page reconnects by itself when a worker dies', LIMIT, async () => {
		const pids = (await workerPids());
		assert.ok(pids.length >= 1, 'no worker found');
		for (const pid of pids)
			process.kill(pid, 'SIGKILL');
		// Both pages notice, say so, and come back on the new workers.
		for (const p of [alice, bob])
			await p.page.locator('[data-testid="chat-status"]' +
			    ':not([data-state="online"])').waitFor({ timeout: 5000 });
		await shot(alice.page, 'chat-reconnecting');
		for (const p of [alice, bob])
			await online(p, 20000);
		const after = (await workerPids());
		assert.ok(after.every((pid) => !pids.includes(pid)));
		await say(alice, 'Still here after the crash');
		await message(bob, 'Still here after the crash').waitFor();
		// The history replayed on rejoin is not shown twice.
		assert.equal(await message(alice, 'Hello Bob!').count(), 1);
	});
});

describe('member list', () => {
	// Joins that race the list: each page used to fetch getClients before
	// opening its socket, and lost whoever joined in between (issue 12,
	// 7e). Five people open a fresh room at the same moment, three times,
	// then all reload at once, then every worker is killed: each time
	// every page must list all five.
	test('everyone who joins at the same moment is listed by everyone',
	    LIMIT, async () => {
		const crowd = [];
		for (let i = 0; i < 5; i++)
			crowd.push(await register(await newPerson(),
			    unique(`m${i}x`)));
		const want = crowd.map((q) => q.id).sort((x, y) => x - y);
		const listed = async (p) => (await p.page.locator(
		    '[data-testid="chat-member"]').evaluateAll((els) =>
		    els.map((e) => Number(e.dataset.userId))))
		    .sort((x, y) => x - y);

		async function everyoneListsEveryone(what) {
			await Promise.all(crowd.map((p) => online(p, 20000)));
			for (const p of crowd) {
				// The list settles within 5 s.
				for (let t = 0; t < 50 && (await listed(p)).length !==
				    want.length; t++)
					await sleep(100);
				assert.deepEqual(await listed(p), want,
				    `${what}: ${p.username}'s "In the room" list`);
			}
		}

		let id;
		for (let attempt = 1; attempt <= 3; attempt++) {
			id = await newRoom(crowd[0], unique('race'));
			await Promise.all(crowd.map((p) => p.page.evaluate((h) => {
				location.hash = h;
			}, `#/rooms/${id}`)));
			await everyoneListsEveryone(`joining, attempt ${attempt}`);
		}
		await Promise.all(crowd.map((p) => p.page.reload()));
		await everyoneListsEveryone('all reloading at once');
		for (const pid of (await workerPids()))
			process.kill(pid, 'SIGKILL');
		await Promise.all(crowd.map((p) => p.page.locator(
		    '[data-testid="chat-status"]:not([data-state="online"])')
		    .waitFor({ timeout: 5000 })));
		await everyoneListsEveryone('after every worker was killed');
		for (const p of crowd)
			await p.context.close();
	});
});

describe('social', () => {
	test('a follow and a post appear in the follower\'s feed', LIMIT, async () => {
		const ann = await register(await newPerson(), unique('ann'));
		const ben = await register(await newPerson(), unique('ben'));
		// Ben finds Ann by name and follows her.
		await tid(ben.page, 'user-search').fill(ann.username);
		await tid(ben.page, 'user-search-submit').click();
		await ben.page.locator(`[data-testid="profile-view"]` +
		    `[data-user-id="${ann.id}"]`).waitFor();
		const follow = tid(ben.page, 'follow-button');
		await follow.filter({ hasText: /^Follow$/ }).waitFor();
		await follow.click();
		await ben.page.locator('[data-testid="follow-button"]' +
		    '[data-following="true"]').waitFor();
		await tid(ben.page, 'profile-followers').filter({ hasText: /^1$/ })
		    .waitFor();
		// Ann posts; it shows in her feed and in Ben's.
		const post = `Fresh bread at 7 <b>sharp</b> ${unique('p')}`;
		await tid(ann.page, 'nav-feed').click();
		await tid(ann.page, 'post-input').fill(post);
		await tid(ann.page, 'post-submit').click();
		await tid(ann.page, 'post-content').getByText(post, { exact: true })
		    .waitFor();
		await tid(ben.page, 'nav-feed').click();
		await ben.page.reload();
		const inFeed = tid(ben.page, 'feed-list').getByTestId('post').filter({
			has: ben.page.getByTestId('post-content').getByText(post,
			    { exact: true }) });
		await inFeed.waitFor();
		assert.match(await inFeed.getByTestId('post-user').textContent(),
		    new RegExp(ann.username));
		assert.equal(await tid(ben.page, 'feed-list').locator('b').count(), 0,
		    'a post\'s HTML became elements');
		await shot(ben.page, 'feed');
		// Ann's profile shows the follower and the post.
		await tid(ben.page, 'post-user').first().click();
		await tid(ben.page, 'profile-view').waitFor();
		await tid(ben.page, 'profile-posts').filter({ hasText: /^1$/ })
		    .waitFor();
		await shot(ben.page, 'profile');
		// Unfollowing takes her posts out of his feed.
		await tid(ben.page, 'follow-button').click();
		await ben.page.locator('[data-testid="follow-button"]' +
		    '[data-following="false"]').waitFor();
		await tid(ben.page, 'nav-feed').click();
		await ben.page.reload();
		await tid(ben.page, 'feed-view').waitFor();
		await sleep(300);
		assert.equal(await inFeed.count(), 0);
		// Ann deletes her post.
		await tid(ann.page, 'post').filter({ hasText: post })
		    .getByTestId('post-delete').click();
		const dialog = tid(ann.page, 'confirm-dialog');
		if (await dialog.isVisible())
			await tid(ann.page, 'confirm-yes').click();
		await tid(ann.page, 'post-content').getByText(post, { exact: true })
		    .waitFor({ state: 'detached' });
	});

	test('writing an empty or too long post is refused with a reason', LIMIT,
	    async () => {
		const p = await register(await newPerson(), unique('max'));
		await tid(p.page, 'nav-feed').click();
		await tid(p.page, 'post-input').fill('x'.repeat(1001));
		const submit = tid(p.page, 'post-submit');
		if (await submit.isEnabled()) {
			await submit.click();
			await tid(p.page, 'error').waitFor();
		}
		assert.equal(await tid(p.page, 'post').count(), 0);
	});
});
