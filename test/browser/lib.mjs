// Shared by the browser tests: the server under test (GOCHAT_URL, started
// by ./run, stopped and started again through GOCHAT_CONTROL), Debian's
// chromium through playwright-core, people who use the page, and
// screenshots under the build directory.
import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const require = createRequire(path.join(process.env.GOCHAT_NODE_MODULES,
    'x.js'));
const { chromium } = require('playwright-core');

export const BASE = process.env.GOCHAT_URL;
const CONTROL = process.env.GOCHAT_CONTROL;
const SHOTS = process.env.GOCHAT_SHOTS;

export const PHONE = { width: 375, height: 740 };
export const DESKTOP = { width: 1280, height: 800 };

// A test that hangs fails on its own instead of holding the whole run.
export const LIMIT = { timeout: 90000 };

let seq = 0;
/** A username nobody has taken yet. */
export function unique(prefix) {
	seq++;
	return `${prefix}${Date.now().toString(36).slice(-5)}${seq}`;
}

export async function launch() {
	return chromium.launch({
		executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
		args: ['--headless', '--no-sandbox',
		    '--disable-background-networking', '--disable-sync',
		    '--disable-component-update', '--no-first-run',
		    '--disable-default-apps', '--disable-dev-shm-usage'],
	});
}

/**
 * The browser of a test file, launched before its tests and closed after
 * them; newPerson() opens a page for one more person. After the tests,
 * every page must have been free of errors.
 */
export function useBrowser() {
	let browser;
	const people = [];
	before(async () => { browser = await launch(); }, LIMIT);
	after(async () => {
		// Close first: a browser left open keeps node (and the run)
		// waiting.
		await browser?.close();
		for (const p of people)
			assert.deepEqual(p.problems, [],
			    `errors in ${p.username}'s page`);
	}, LIMIT);
	return {
		async newPerson(viewport) {
			const p = await person(browser, viewport);
			people.push(p);
			return p;
		},
	};
}

/**
 * One person: their own browser context (own cookies) and page. Any page
 * error or console error is kept: tests assert there were none.
 */
export async function person(browser, viewport = DESKTOP) {
	const context = await browser.newContext({ viewport });
	const page = await context.newPage();
	page.setDefaultTimeout(10000);
	const problems = [];
	page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
	page.on('console', (m) => {
		// A failed fetch the page handled (401 before login) is logged
		// by chromium itself; only the page's own errors count.
		if (m.type() === 'error' && !/Failed to load resource/.test(
		    m.text()))
			problems.push(`console: ${m.text()}`);
	});
	await page.goto(BASE + '/');
	return { context, page, problems };
}

export const tid = (page, id) => page.getByTestId(id);

export async function register(p, username, password = 'correct horse') {
	const { page } = p;
	await page.goto(BASE + '/#/register');
	await tid(page, 'register-username').fill(username);
	await tid(page, 'register-email').fill(`${username.toLowerCase()}@example.org`);
	await tid(page, 'register-password').fill(password);
	await tid(page, 'register-submit').click();
	await tid(page, 'current-user').filter({ hasText: username }).waitFor();
	p.username = username;
	p.id = (await (await page.request.get(BASE + '/me')).json()).id;
	return p;
}

export async function login(p, name, password = 'correct horse') {
	const { page } = p;
	await page.goto(BASE + '/#/login');
	await tid(page, 'login-name').fill(name);
	await tid(page, 'login-password').fill(password);
	await tid(page, 'login-submit').click();
}

export async function createRoom(p, id, name) {
	const { page } = p;
	await tid(page, 'nav-rooms').click();
	await tid(page, 'rooms-view').waitFor();
	await tid(page, 'room-create-id').fill(id);
	await tid(page, 'room-create-name').fill(name);
	await tid(page, 'room-create-submit').click();
	await page.locator(`[data-testid="room-item"][data-room-id="${id}"]`)
	    .waitFor();
}

export async function joinRoom(p, id) {
	const { page } = p;
	await tid(page, 'nav-rooms').click();
	await tid(page, 'rooms-view').waitFor();
	const item = page.locator(`[data-testid="room-item"][data-room-id="${id}"]`);
	await item.getByTestId('room-join').click();
	await page.locator(`[data-testid="chat-view"][data-room-id="${id}"]`)
	    .waitFor();
	await online(p);
}

/** Opens the chat view of room id by its address. */
export async function openRoom(p, id) {
	await p.page.goto(`${BASE}/#/rooms/${encodeURIComponent(id)}`);
	await p.page.locator(`[data-testid="chat-view"][data-room-id="${id}"]`)
	    .waitFor();
	await online(p);
}

/** A public room made through the API, as p. */
export async function newRoom(p, id = unique('room'), body = {}) {
	const res = await p.page.request.post(BASE + '/ws/createRoom',
	    { data: { id, ...body } });
	assert.equal(res.status(), 200, await res.text());
	return id;
}

export async function online(p, timeout = 10000) {
	await p.page.locator('[data-testid="chat-status"][data-state="online"]')
	    .waitFor({ timeout });
}

export async function say(p, text) {
	await tid(p.page, 'chat-input').fill(text);
	await tid(p.page, 'chat-send').click();
}

/** The message element whose content is exactly text. */
export function message(p, text) {
	return p.page.getByTestId('chat-message').filter({
		has: p.page.getByTestId('msg-content').getByText(text,
		    { exact: true }),
	});
}

export async function shot(page, name) {
	fs.mkdirSync(SHOTS, { recursive: true });
	await page.screenshot({ path: path.join(SHOTS, `${name}.png`) });
}

async function control(method, what) {
	const res = await fetch(CONTROL + what, { method });
	const text = await res.text();
	assert.equal(res.status, 200, `${method} ${what}: ${text}`);
	return text;
}

/** Stops the server (SIGTERM, as an operator's restart does). */
export const stopServer = () => control('POST', '/stop');
/** Starts it again on the same port with the same database. */
export const startServer = () => control('POST', '/start');

/** The pids of the server's workers (children titled "gochat: worker n"). */
export async function workerPids() {
	const master = (await control('GET', '/pid')).trim();
	const out = execFileSync('ps', ['-o', 'pid=,args=', '--ppid', master],
	    { encoding: 'utf8' });
	return out.split('\n').map((l) => l.trim().match(/^(\d+) gochat: worker/))
	    .filter(Boolean).map((m) => Number(m[1]));
}
