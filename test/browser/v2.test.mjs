// The web client on chat protocol v2 (SPEC §9): acknowledged sends with a
// pending state, resends after a reconnect that never duplicate, resume
// (?since=) without gap or join/leave noise, the gap marker, edits and
// deletes, "is typing", unread badges and read markers, the offline banner,
// a server restart in the middle of a conversation, and the §5 fallback.
// Run by ./run (make check-browser), whose server keeps history_on_join =
// 20 and resume_max = 40 so that both limits are easy to pass.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';

import {
	BASE, LIMIT, message, newRoom, online, openRoom, register, say, shot,
	startServer, stopServer, tid, unique, useBrowser,
} from './lib.mjs';

const { newPerson } = useBrowser();

const HISTORY_ON_JOIN = 20;
const RESUME_MAX = 40;

async function people(...names) {
	const out = [];
	for (const name of names)
		out.push(await register(await newPerson(), unique(name)));
	return out;
}

/** The contents of the chat messages p's page shows, top to bottom. */
const shown = (p) => tid(p.page, 'chat-message').evaluateAll((els) =>
    els.map((e) => e.querySelector('[data-testid="msg-content"]')
	.textContent));

/** The confirmed (acknowledged) messages' ids, top to bottom. */
const shownIds = (p) => tid(p.page, 'chat-messages')
    .getByTestId('chat-message').evaluateAll((els) =>
	els.map((e) => Number(e.dataset.id)));

const notices = (p) => tid(p.page, 'chat-notice').allTextContents();
const pending = (p) => p.page.locator('[data-testid="chat-message"]' +
    '[data-state="pending"]');

/** Waits until p shows exactly the contents wanted, in this order. */
async function showsInOrder(p, wanted, timeout = 20000) {
	const deadline = Date.now() + timeout;
	let got;
	for (;;) {
		got = (await shown(p)).filter((c) => wanted.includes(c));
		if (got.length === wanted.length && got.every((c, i) =>
		    c === wanted[i]) || Date.now() > deadline)
			break;
		await sleep(100);
	}
	assert.deepEqual(got, wanted, `${p.username}'s page`);
}

/** The room's stored history as the API gives it (current state). */
async function history(p, room) {
	const res = await p.page.request.get(`${BASE}/ws/history/` +
	    `${encodeURIComponent(room)}?limit=200`);
	assert.equal(res.status(), 200);
	return res.json();
}

/**
 * n messages sent by p outside the page (own v2 sockets, at most 25 each
 * to stay under the rate limit's burst), each acknowledged: "prefix 1".."n".
 */
async function sendMany(p, room, prefix, n) {
	const url = BASE.replace(/^http/, 'ws') + '/ws/joinRoom/' +
	    encodeURIComponent(room);
	const texts = Array.from({ length: n }, (_, i) => `${prefix} ${i + 1}`);
	await p.page.evaluate(async ({ url, texts }) => {
		const batch = (part) => new Promise((resolve, reject) => {
			const ws = new WebSocket(url, ['gochat.v2']);
			let acks = 0;
			ws.onopen = () => {
				for (const content of part)
					ws.send(JSON.stringify({ op: 'send', content,
					    cid: `${content}-${Math.random()}` }));
			};
			ws.onmessage = (e) => {
				const ev = JSON.parse(e.data);
				if (ev.type === 'error')
					reject(new Error(e.data));
				if (ev.type === 'ack' && ++acks === part.length) {
					ws.close();
					resolve();
				}
			};
			ws.onclose = () => reject(new Error('closed'));
		});
		// One socket after the other: the room gets them in order.
		for (let i = 0; i < texts.length; i += 25)
			await batch(texts.slice(i, i + 25));
	}, { url, texts });
	return texts;
}

describe('sending (acks, pending, resend)', () => {
	test('a message is pending until its ack, then shown once to all',
	    LIMIT, async () => {
		const [ann, ben] = await people('ann', 'ben');
		const room = await newRoom(ann);
		await openRoom(ann, room);
		await openRoom(ben, room);
		for (const p of [ann, ben])
			await p.page.locator('[data-testid="chat-view"]' +
			    '[data-protocol="v2"]').waitFor();
		// Held back by the network: pending, said so.
		await ann.context.setOffline(true);
		await say(ann, 'first try');
		const mine = pending(ann).filter({ hasText: 'first try' });
		await mine.waitFor();
		await mine.getByTestId('msg-status').filter({
		    hasText: /waiting for the connection/i }).waitFor();
		await shot(ann.page, 'chat-pending');
		await ann.context.setOffline(false);
		await online(ann);
		await message(ben, 'first try').waitFor();
		await pending(ann).first().waitFor({ state: 'detached' });
		await say(ann, 'second one');
		await message(ben, 'second one').waitFor();
		await pending(ann).first().waitFor({ state: 'detached' });
		for (const p of [ann, ben]) {
			await showsInOrder(p, ['first try', 'second one']);
			const ids = await shownIds(p);
			assert.deepEqual(ids, [...ids].sort((a, b) => a - b));
		}
	});

	test('a message still waiting survives leaving the room and a reload',
	    LIMIT, async () => {
		const [wes, xia] = await people('wes', 'xia');
		const room = await newRoom(wes);
		await openRoom(wes, room);
		await openRoom(xia, room);
		await wes.context.setOffline(true);
		await say(wes, 'written in the lift');
		await pending(wes).filter({ hasText: 'written in the lift' })
		    .waitFor();
		await wes.page.evaluate(() => { location.hash = '#/feed'; });
		await tid(wes.page, 'feed-view').waitFor();
		await wes.context.setOffline(false);
		await wes.page.reload();
		await openRoom(wes, room);
		await message(xia, 'written in the lift').waitFor();
		await pending(wes).first().waitFor({ state: 'detached' });
		await wes.page.reload();
		await online(wes);
		await message(wes, 'written in the lift').waitFor();
		assert.equal(await message(wes, 'written in the lift').count(), 1);
		assert.equal((await history(xia, room)).filter((m) =>
		    m.content === 'written in the lift').length, 1);
	});

	test('a send whose ack is lost goes again with its cid: stored once',
	    LIMIT, async () => {
		const [cat, dan] = await people('cat', 'dan');
		const room = await newRoom(cat);
		// Cat's socket dies right after the server acknowledged her
		// first message, before the ack reaches the page.
		let drop = true;
		const sent = [];
		await cat.page.routeWebSocket(/\/ws\/joinRoom\//, (ws) => {
			const server = ws.connectToServer();
			ws.onMessage((m) => {
				if (JSON.parse(m).op === 'send')
					sent.push(JSON.parse(m));
				server.send(m);
			});
			server.onMessage((m) => {
				if (drop && JSON.parse(m).type === 'ack') {
					drop = false;
					ws.close({ code: 4000, reason: 'lost' });
					server.close();
					return;
				}
				ws.send(m);
			});
		});
		await cat.page.reload();   // the route applies to new pages
		await openRoom(cat, room);
		await openRoom(dan, room);
		await say(cat, 'said once');
		await message(dan, 'said once').waitFor();
		await pending(cat).first().waitFor({ state: 'detached' });
		await online(cat);
		await say(cat, 'and then this');
		await message(dan, 'and then this').waitFor();
		for (const p of [cat, dan])
			await showsInOrder(p, ['said once', 'and then this']);
		const first = sent.filter((s) => s.content === 'said once');
		assert.ok(first.length >= 2, 'the message was not sent again');
		assert.equal(new Set(first.map((s) => s.cid)).size, 1,
		    'a resend must keep its cid');
		const stored = (await history(dan, room)).filter((m) =>
		    m.content === 'said once');
		assert.equal(stored.length, 1, 'stored twice');
	});
});

describe('reconnecting', () => {
	test('offline: a banner at once, messages wait, then go in order',
	    LIMIT, async () => {
		const [eve, fay] = await people('eve', 'fay');
		const room = await newRoom(eve);
		await openRoom(eve, room);
		await openRoom(fay, room);
		await say(eve, 'before the tunnel');
		await message(fay, 'before the tunnel').waitFor();
		const before = { eve: await notices(eve), fay: await notices(fay) };
		await eve.context.setOffline(true);
		await tid(eve.page, 'offline-banner').waitFor({ timeout: 2000 });
		await eve.page.locator('[data-testid="chat-status"]' +
		    '[data-state="offline"]').waitFor({ timeout: 2000 });
		await shot(eve.page, 'chat-offline');
		await say(eve, 'in the tunnel 1');
		await say(eve, 'in the tunnel 2');
		await say(fay, 'meanwhile outside');
		await sleep(500);
		assert.equal(await message(fay, 'in the tunnel 1').count(), 0);
		await eve.context.setOffline(false);
		await tid(eve.page, 'offline-banner').waitFor({ state: 'hidden',
		    timeout: 2000 });
		// Online again at once, not after the backoff.
		await online(eve, 3000);
		const order = ['before the tunnel', 'in the tunnel 1',
		    'in the tunnel 2'];
		await showsInOrder(fay, order);
		await showsInOrder(eve, order);
		await message(eve, 'meanwhile outside').waitFor();
		// Neither page says anyone left or joined: past the grace.
		await sleep(4000);
		assert.deepEqual(await notices(fay), before.fay);
		assert.deepEqual(await notices(eve), before.eve);
	});

	test('a reconnect shows everything missed, more than the join ' +
	    'history, once, with no notices', LIMIT, async () => {
		const [gus, hal] = await people('gus', 'hal');
		const room = await newRoom(gus);
		await openRoom(gus, room);
		await openRoom(hal, room);
		await say(gus, 'hello hal');
		await message(hal, 'hello hal').waitFor();
		const before = await notices(hal);
		await hal.context.setOffline(true);
		await hal.page.locator('[data-testid="chat-status"]' +
		    '[data-state="offline"]').waitFor();
		const missed = await sendMany(gus, room, 'missed',
		    HISTORY_ON_JOIN + 10);
		await hal.context.setOffline(false);
		await online(hal);
		await showsInOrder(hal, ['hello hal', ...missed]);
		assert.equal(await tid(hal.page, 'chat-gap').count(), 0);
		const ids = await shownIds(hal);
		assert.equal(new Set(ids).size, ids.length, 'shown twice');
		assert.deepEqual(await notices(hal), before);
	});

	test('more missed than a resume replays: a marker loads the rest',
	    LIMIT, async () => {
		const [ida, jon] = await people('ida', 'jon');
		const room = await newRoom(ida);
		await openRoom(ida, room);
		await openRoom(jon, room);
		await say(ida, 'last seen');
		await message(jon, 'last seen').waitFor();
		await jon.context.setOffline(true);
		await jon.page.locator('[data-testid="chat-status"]' +
		    '[data-state="offline"]').waitFor();
		const missed = await sendMany(ida, room, 'far',
		    RESUME_MAX + 10);
		await jon.context.setOffline(false);
		await online(jon);
		const gap = tid(jon.page, 'chat-gap');
		await gap.waitFor();
		// The newest resume_max are there, the 10 before behind it.
		await showsInOrder(jon, ['last seen', ...missed.slice(10)]);
		await shot(jon.page, 'chat-gap');
		await gap.getByTestId('chat-gap-load').click();
		await gap.waitFor({ state: 'detached' });
		await showsInOrder(jon, ['last seen', ...missed]);
	});

	test('a server restart mid-conversation: what was typed meanwhile ' +
	    'goes out after it, once each, in order', LIMIT, async () => {
		const [kim, lou] = await people('kim', 'lou');
		const room = await newRoom(kim);
		await openRoom(kim, room);
		await openRoom(lou, room);
		await say(kim, 'are you there?');
		await say(lou, 'yes, go on');
		await message(kim, 'yes, go on').waitFor();
		const before = { kim: await notices(kim), lou: await notices(lou) };
		await stopServer();
		try {
			for (const p of [kim, lou])
				await p.page.locator('[data-testid="chat-status"]' +
				    ':not([data-state="online"])').waitFor();
			for (const text of ['one', 'two', 'three'])
				await say(kim, `kim ${text}`);
			await say(lou, 'lou while down');
			assert.equal(await pending(kim).count(), 3);
			assert.equal(await pending(lou).count(), 1);
			await shot(kim.page, 'chat-restart-pending');
		} finally {
			await startServer();
		}
		for (const p of [kim, lou])
			await online(p, 20000);
		const kims = ['kim one', 'kim two', 'kim three'];
		for (const p of [kim, lou]) {
			await showsInOrder(p, ['are you there?', 'yes, go on',
			    ...kims]);
			await message(p, 'lou while down').waitFor();
			await pending(p).first().waitFor({ state: 'detached' });
		}
		const stored = (await history(kim, room)).map((m) => m.content);
		assert.deepEqual(stored.filter((c) => kims.includes(c)), kims);
		assert.equal(stored.filter((c) => c === 'lou while down').length, 1);
		// Nobody "left" or "joined": both only reconnected. Past the
		// grace given to those a reconnect finds missing.
		await sleep(11000);
		assert.deepEqual(await notices(kim), before.kim);
		assert.deepEqual(await notices(lou), before.lou);
	});
});

describe('editing and deleting', () => {
	test('the author edits and deletes, everyone sees it live', LIMIT,
	    async () => {
		const [max, ned] = await people('max', 'ned');
		const room = await newRoom(max);
		await openRoom(max, room);
		await openRoom(ned, room);
		await say(ned, 'ned speaks');
		await say(max, 'teh typo');
		await say(max, 'to be removed');
		for (const p of [max, ned])
			await message(p, 'to be removed').waitFor();
		// Only my own messages have Edit; a member deletes only theirs.
		assert.equal(await message(ned, 'teh typo').getByTestId('msg-edit')
		    .count(), 0);
		assert.equal(await message(ned, 'teh typo')
		    .getByTestId('msg-delete').count(), 0);
		const typo = message(max, 'teh typo');
		await typo.hover();
		await typo.getByTestId('msg-edit').click();
		const box = tid(max.page, 'msg-edit-input');
		await box.fill('the typo, fixed');
		await shot(max.page, 'chat-editing');
		await box.press('Enter');
		for (const p of [max, ned]) {
			const fixed = message(p, 'the typo, fixed');
			await fixed.getByTestId('msg-edited').waitFor();
			assert.equal(await message(p, 'teh typo').count(), 0);
		}
		await shot(ned.page, 'chat-edited');
		const gone = message(max, 'to be removed');
		await gone.hover();
		await gone.getByTestId('msg-delete').click();
		await tid(max.page, 'confirm-yes').click();
		for (const p of [max, ned])
			await message(p, 'to be removed').waitFor({ state: 'detached' });
		// A reload shows the same: edited, and the deleted one gone.
		await ned.page.reload();
		await online(ned);
		await message(ned, 'the typo, fixed').getByTestId('msg-edited')
		    .waitFor();
		assert.equal(await message(ned, 'to be removed').count(), 0);
		await message(ned, 'ned speaks').waitFor();
	});

	test('the room owner deletes anyone\'s message', LIMIT, async () => {
		const [ola, pat] = await people('ola', 'pat');
		const room = await newRoom(ola);
		await openRoom(ola, room);
		await openRoom(pat, room);
		await say(pat, 'spam spam spam');
		const spam = message(ola, 'spam spam spam');
		await spam.waitFor();
		assert.equal(await spam.getByTestId('msg-edit').count(), 0,
		    'the owner may not edit what others wrote');
		await spam.hover();
		await spam.getByTestId('msg-delete').click();
		await tid(ola.page, 'confirm-yes').click();
		for (const p of [ola, pat])
			await message(p, 'spam spam spam').waitFor({
			    state: 'detached' });
	});
});

describe('typing, unread and read markers', () => {
	test('"is typing" shows while someone types, sent at most every 3 s',
	    LIMIT, async () => {
		const [quin, rae] = await people('quin', 'rae');
		const room = await newRoom(quin);
		await openRoom(quin, room);
		await openRoom(rae, room);
		const typingOps = [];
		rae.page.on('websocket', (ws) => ws.on('framesent', (f) => {
			if (typeof f.payload === 'string' &&
			    f.payload.includes('"typing"'))
				typingOps.push(Date.now());
		}));
		// rae's socket predates the listener: a reload gives a new one.
		await rae.page.reload();
		await online(rae);
		const line = tid(quin.page, 'chat-typing');
		const started = Date.now();
		await tid(rae.page, 'chat-input').pressSequentially(
		    'hello there quin', { delay: 60 });
		const took = Date.now() - started;
		await line.filter({ hasText: `${rae.username} is typing` })
		    .waitFor();
		await shot(quin.page, 'chat-typing');
		// 16 keys: one op, and one more per 3 s the typing took.
		assert.ok(typingOps.length >= 1 && typingOps.length <=
		    1 + Math.floor(took / 3000), `${typingOps.length} typing ` +
		    `ops in ${took} ms`);
		// Gone once the message comes.
		await tid(rae.page, 'chat-send').click();
		await message(quin, 'hello there quin').waitFor();
		await line.waitFor({ state: 'hidden', timeout: 1000 });
		// And by itself ~5 s after the last typing.
		await sleep(3000);
		await tid(rae.page, 'chat-input').pressSequentially('more',
		    { delay: 30 });
		await line.waitFor();
		await sleep(3000);
		assert.ok(await line.isVisible(), 'hidden before 5 s');
		await line.waitFor({ state: 'hidden', timeout: 4000 });
		// Never shown to the one typing.
		assert.equal(await tid(rae.page, 'chat-typing').isVisible(),
		    false);
	});

	test('unread counts in the room list and the title; reading clears ' +
	    'them', LIMIT, async () => {
		const [sam, tia] = await people('sam', 'tia');
		const here = await newRoom(sam);
		const there = await newRoom(tia, unique('there'));
		await openRoom(tia, there);
		await say(tia, 'there before');
		// Sam has read it, and is in another room while three messages
		// arrive there: counted within a few seconds.
		await openRoom(sam, there);
		await message(sam, 'there before').waitFor();
		await sleep(1000);   // the read marker goes
		await openRoom(sam, here);
		await sendMany(tia, there, 'unseen', 3);
		await sam.page.waitForFunction(() => /^\(3\) /.test(document.title),
		    null, { timeout: 15000 });
		await tid(sam.page, 'nav-unread').filter({ hasText: /^3$/ })
		    .waitFor();
		await tid(sam.page, 'nav-rooms').click();
		const badge = sam.page.locator(`[data-testid="room-item"]` +
		    `[data-room-id="${there}"] [data-testid="room-unread"]`);
		await badge.filter({ hasText: /^3$/ }).waitFor();
		await shot(sam.page, 'rooms-unread');
		// Opening the room reads it: the marker goes to the server.
		await openRoom(sam, there);
		await message(sam, 'unseen 3').waitFor();
		const unreadThere = async () => (await (await sam.page.request.get(
		    BASE + '/ws/getRooms?limit=200')).json()).find((r) =>
		    r.id === there).unread;
		for (let t = 0; t < 50 && await unreadThere() !== 0; t++)
			await sleep(100);
		assert.equal(await unreadThere(), 0, 'no read marker sent');
		assert.doesNotMatch(await sam.page.title(), /^\(/);
		// A message that comes while the page is hidden is unread
		// until the page is seen again.
		const visibility = (state) => sam.page.evaluate((s) => {
			if (s === 'visible')
				delete document.visibilityState;
			else
				Object.defineProperty(document, 'visibilityState',
				    { get: () => s, configurable: true });
			document.dispatchEvent(new Event('visibilitychange'));
		}, state);
		await visibility('hidden');
		await say(tia, 'while you were away');
		await message(sam, 'while you were away').waitFor();
		await sam.page.waitForFunction(() => /^\(1\) /.test(
		    document.title));
		await visibility('visible');
		await sam.page.waitForFunction(() => !/^\(/.test(document.title));
		for (let t = 0; t < 50 && await unreadThere() !== 0; t++)
			await sleep(100);
		assert.equal(await unreadThere(), 0);
	});
});

describe('a server without gochat.v2', () => {
	test('the page falls back to §5: messages flow, no edit or delete',
	    LIMIT, async () => {
		const [uma, vic] = await people('uma', 'vic');
		const room = await newRoom(uma);
		// Uma's browser meets a server that refuses the subprotocol
		// (chromium then fails the handshake): simulated by failing
		// every socket that asks for it.
		await uma.page.addInitScript(() => {
			const Real = window.WebSocket;
			window.WebSocket = function WebSocket(url, protocols) {
				if (protocols && protocols.length)
					return new Real('ws://127.0.0.1:9/refused');
				return new Real(url);
			};
			window.WebSocket.prototype = Real.prototype;
			Object.assign(window.WebSocket, { CONNECTING: 0, OPEN: 1,
			    CLOSING: 2, CLOSED: 3 });
		});
		await uma.page.reload();
		await openRoom(uma, room);
		await openRoom(vic, room);
		await uma.page.locator('[data-testid="chat-view"]' +
		    '[data-protocol="v1"]').waitFor();
		await say(uma, 'plain old protocol');
		await say(vic, 'v2 here');
		for (const p of [uma, vic]) {
			await message(p, 'plain old protocol').waitFor();
			await message(p, 'v2 here').waitFor();
		}
		assert.equal(await tid(uma.page, 'msg-edit').count(), 0);
		assert.equal(await tid(uma.page, 'msg-delete').count(), 0);
		// The refused handshakes are chromium's own console lines.
		uma.problems.splice(0, uma.problems.length, ...uma.problems
		    .filter((x) => !/ws:\/\/127\.0\.0\.1:9\/refused/.test(x)));
	});
});
