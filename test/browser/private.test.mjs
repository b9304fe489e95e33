// Private rooms and direct messages in the web client (SPEC §10): making
// a private room, the owner's member panel (add by username, remove),
// leaving, deleting, the "Message" button of a profile and direct rooms
// listed apart. Run by ./run (make check-browser) like client.test.mjs.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import {
	BASE, LIMIT, online, openRoom, register, say, message, shot, tid, unique,
	useBrowser,
} from './lib.mjs';

const { newPerson } = useBrowser();

const item = (p, kind, id) => p.page.locator(
    `[data-testid="${kind}"][data-room-id="${id}"]`);

async function rooms(p) {
	await tid(p.page, 'nav-rooms').click();
	await tid(p.page, 'rooms-view').waitFor();
}

async function listed(p, id) {
	const got = await (await p.page.request.get(BASE +
	    '/ws/getRooms?limit=200')).json();
	return got.some((r) => r.id === id);
}

async function createPrivate(p, id, name) {
	await rooms(p);
	await tid(p.page, 'room-create-id').fill(id);
	await tid(p.page, 'room-create-name').fill(name);
	await tid(p.page, 'room-create-private').check();
	await tid(p.page, 'room-create-submit').click();
	await item(p, 'room-item', id).getByTestId('room-private').waitFor();
}

async function addMember(owner, who) {
	await tid(owner.page, 'member-add-name').fill(who.username);
	await tid(owner.page, 'member-add-submit').click();
	await owner.page.locator(`[data-testid="room-member"]` +
	    `[data-user-id="${who.id}"]`).waitFor();
}

describe('private rooms', () => {
	let ann, ben;

	before(async () => {
		ann = await register(await newPerson(), unique('ann'));
		ben = await register(await newPerson(), unique('ben'));
	}, LIMIT);

	test('the owner makes a private room and adds a member by username',
	    LIMIT, async () => {
		const id = unique('priv');
		await createPrivate(ann, id, 'Secret plans');
		assert.equal(await listed(ben, id), false,
		    'a private room must not be listed for a non-member');
		await openRoom(ann, id);
		await tid(ann.page, 'room-panel').waitFor();
		await addMember(ann, ben);
		await shot(ann.page, 'private-members');
		await rooms(ben);
		await item(ben, 'room-item', id).waitFor();
		await openRoom(ben, id);
		await say(ben, 'in the secret room');
		await message(ann, 'in the secret room').waitFor();
		// A member has no panel to add people, but may leave.
		assert.equal(await tid(ben.page, 'member-add-name').count(), 0);
		await tid(ben.page, 'room-leave').click();
		await tid(ben.page, 'rooms-view').waitFor();
		await item(ben, 'room-item', id).waitFor({ state: 'detached' });
		assert.equal(await listed(ben, id), false);
	});

	test('the owner removes a member, whose chat closes', LIMIT,
	    async () => {
		const id = unique('priv');
		await createPrivate(ann, id, 'Removal');
		await openRoom(ann, id);
		await addMember(ann, ben);
		await openRoom(ben, id);
		await ann.page.locator(`[data-testid="room-member"]` +
		    `[data-user-id="${ben.id}"]`).getByTestId('member-remove')
		    .click();
		await ann.page.locator(`[data-testid="room-member"]` +
		    `[data-user-id="${ben.id}"]`).waitFor({ state: 'detached' });
		// Ben's socket is closed; reconnecting finds no such room.
		await ben.page.getByText('Room not found').waitFor();
		assert.equal(await listed(ben, id), false);
	});

	test('the owner deletes the room after a confirmation', LIMIT,
	    async () => {
		const id = unique('priv');
		await createPrivate(ann, id, 'Short lived');
		await openRoom(ann, id);
		await tid(ann.page, 'room-delete').click();
		await tid(ann.page, 'confirm-yes').click();
		await tid(ann.page, 'rooms-view').waitFor();
		await item(ann, 'room-item', id).waitFor({ state: 'detached' });
		assert.equal(await listed(ann, id), false);
	});
});

describe('direct messages', () => {
	test('"Message" on a profile opens the direct room, listed apart',
	    LIMIT, async () => {
		const cat = await register(await newPerson(), unique('cat'));
		const dan = await register(await newPerson(), unique('dan'));
		await cat.page.goto(`${BASE}/#/users/${dan.id}`);
		await tid(cat.page, 'message-button').click();
		const view = cat.page.locator('[data-testid="chat-view"]' +
		    '[data-dm="true"]');
		await view.waitFor();
		await tid(cat.page, 'chat-title').filter({ hasText: dan.username })
		    .waitFor();
		const id = await view.getAttribute('data-room-id');
		await online(cat);
		await say(cat, 'just between us');
		// Dan finds it under direct messages, named after Cat.
		await rooms(dan);
		const dm = item(dan, 'dm-item', id);
		await dm.getByTestId('room-name').filter({ hasText: cat.username })
		    .waitFor();
		assert.equal(await item(dan, 'room-item', id).count(), 0,
		    'a direct room is not among the rooms');
		await shot(dan.page, 'direct-messages');
		await dm.getByTestId('room-join').click();
		await online(dan);
		await message(dan, 'just between us').waitFor();
		// The same room from Dan's side of the profile.
		await dan.page.goto(`${BASE}/#/users/${cat.id}`);
		await tid(dan.page, 'message-button').click();
		await dan.page.locator(`[data-testid="chat-view"]` +
		    `[data-room-id="${id}"]`).waitFor();
	});
});
