/*
 * GoChat web client: one page, hash routes, no dependencies, no build step.
 *
 * Every piece of server data reaches the page through el() and textContent,
 * never through an HTML parser, so a username, room name, message or post
 * shows exactly as typed. The session is the HttpOnly cookie the server
 * sets on register and login: this file never sees or stores the token.
 *
 * Layout of this file: constants and state; DOM helpers; the API; the
 * error banner and the confirm dialog; the router; then one section per
 * view (auth, top bar, feed and posts, profile, rooms, chat); start-up.
 */
'use strict';

const POST_MAX_CHARS = 1000;      // SPEC §4, counted in code points
const MESSAGE_MAX_BYTES = 4096;   // SPEC §1, max_ws_message, UTF-8 bytes
const FEED_PAGE = 20;
const USERS_PAGE = 50;
const HISTORY_PAGE = 50;
const ROOMS_REFRESH_MS = 3000;
const UNREAD_REFRESH_MS = 5000;   // getRooms for the unread counts elsewhere
const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 5000;
const PROTOCOL = 'gochat.v2';     // SPEC §9
const TYPING_EVERY_MS = 3000;     // at most one typing op per 3 s
const TYPING_SHOW_MS = 5000;      // "is typing" without news for 5 s: gone
const LEAVE_GRACE_MS = 3000;      // a leave undone that soon is not news
const RECONNECT_GRACE_MS = 10000; // the same, for those my reconnect missed
const READ_DELAY_MS = 500;        // read markers: at most two a second

// What the server means by the close codes a client can act on (SPEC §5).
const CLOSE_REASONS = {
	1001: 'The server is restarting',
	1008: 'You were too slow to read',
	1009: 'Message too long',
	1011: 'The server could not accept the message',
};

// What the error codes of SPEC §9 mean to a person, when the server's own
// words are missing.
const ERROR_CODES = {
	bad_request: 'The server did not understand the request',
	forbidden: 'You are not allowed to do that',
	not_found: 'That message does not exist any more',
	too_long: 'Too long',
	rate_limited: 'Too many messages at once',
	unavailable: 'The server cannot do that right now',
};

const state = {
	me: null,       // {id, username, ...} once logged in
	after: null,    // the route asked for before logging in
	notice: null,   // a one-off line for the login screen
	view: null,     // {signal, onLeave()} of the view on screen
};

const utf8 = new TextEncoder();

/* --- DOM helpers ------------------------------------------------------- */

/*
 * el('a', {class, testid, data: {...}, text, onclick, ...attrs}, ...children)
 * Children may be nodes, strings (added as text) or null/false (skipped).
 */
function el(tag, props = {}, ...children) {
	const node = document.createElement(tag);
	for (const [key, value] of Object.entries(props)) {
		if (value === null || value === undefined || value === false)
			continue;
		if (key === 'class')
			node.className = value;
		else if (key === 'testid')
			node.dataset.testid = value;
		else if (key === 'data')
			Object.assign(node.dataset, value);
		else if (key === 'text')
			node.textContent = value;
		else if (key === 'value')
			node.value = value;
		else if (key.startsWith('on'))
			node.addEventListener(key.slice(2), value);
		else
			node.setAttribute(key, value === true ? '' : String(value));
	}
	node.append(...children.flat().filter((c) => c !== null &&
	    c !== undefined && c !== false));
	return node;
}

// Stroke icons drawn in a 24×24 box (style.css gives them colour and size).
const ICONS = {
	feed: 'M3 9l9-7 9 7v11a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2zM9 22V12h6v10',
	rooms: 'M21 15a2 2 0 0 1-2 2H7l-4 4V5a2 2 0 0 1 2-2h14a2 2 0 0 1 2 2z',
	user: 'M20 21v-2a4 4 0 0 0-4-4H8a4 4 0 0 0-4 4v2M12 11a4 4 0 1 0 ' +
	    '0-8 4 4 0 0 0 0 8z',
	search: 'M11 19a8 8 0 1 1 0-16 8 8 0 0 1 0 16zM21 21l-4.35-4.35',
	logout: 'M9 21H5a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2h4M16 17l5-5-5-5M21 12H9',
	send: 'M22 2L11 13M22 2l-7 20-4-9-9-4z',
	back: 'M19 12H5M12 19l-7-7 7-7',
	trash: 'M3 6h18M19 6l-1 14a2 2 0 0 1-2 2H8a2 2 0 0 1-2-2L5 6M10 11v6' +
	    'M14 11v6M9 6V4a1 1 0 0 1 1-1h4a1 1 0 0 1 1 1v2',
	close: 'M18 6L6 18M6 6l12 12',
};

function icon(name) {
	const ns = 'http://www.w3.org/2000/svg';
	const svg = document.createElementNS(ns, 'svg');
	svg.setAttribute('viewBox', '0 0 24 24');
	svg.setAttribute('class', 'icon');
	svg.setAttribute('aria-hidden', 'true');
	const path = document.createElementNS(ns, 'path');
	path.setAttribute('d', ICONS[name]);
	svg.append(path);
	return svg;
}

// A stable hue per name, so a person keeps their colour everywhere.
function hue(name) {
	let h = 0;
	for (const ch of name.toLowerCase())
		h = (h * 31 + ch.codePointAt(0)) >>> 0;
	return h % 360;
}

function initials(name) {
	const parts = name.split(/[._-]+/).filter(Boolean);
	const first = (s) => [...s][0].toUpperCase();
	if (parts.length === 0)
		return '?';
	return parts.length > 1 ? first(parts[0]) + first(parts[1]) :
	    first(parts[0]);
}

// The initials are drawn by style.css from data-initials, so that they
// are not part of the text of whatever holds the avatar.
function avatar(name, size = 'md', shape = 'avatar') {
	const node = el('span', { class: `${shape} ${shape}-${size}`,
	    'aria-hidden': 'true', data: { initials: initials(name) } });
	node.style.backgroundColor = `hsl(${hue(name)} 45% 46%)`;
	return node;
}

const plural = (n, one, many = one + 's') => `${n} ${n === 1 ? one : many}`;
const userHref = (id) => `#/users/${id}`;
const roomHref = (id) => `#/rooms/${encodeURIComponent(id)}`;

/* --- Times ------------------------------------------------------------- */

const fmtClock = new Intl.DateTimeFormat(undefined,
    { hour: '2-digit', minute: '2-digit' });
const fmtWeekday = new Intl.DateTimeFormat(undefined,
    { weekday: 'short', hour: '2-digit', minute: '2-digit' });
const fmtDay = new Intl.DateTimeFormat(undefined,
    { day: 'numeric', month: 'short' });
const fmtDayYear = new Intl.DateTimeFormat(undefined,
    { day: 'numeric', month: 'short', year: 'numeric' });
const fmtMonth = new Intl.DateTimeFormat(undefined,
    { month: 'long', year: 'numeric' });
const fmtFull = new Intl.DateTimeFormat(undefined,
    { dateStyle: 'full', timeStyle: 'short' });

function sameDay(a, b) {
	return a.toDateString() === b.toDateString();
}

// "now", "5m", "3h", "2d", then a date: for posts.
function ago(date) {
	const s = (Date.now() - date.getTime()) / 1000;
	if (s < 45)
		return 'now';
	if (s < 3600)
		return `${Math.max(1, Math.round(s / 60))}m`;
	if (s < 86400)
		return `${Math.floor(s / 3600)}h`;
	if (s < 7 * 86400)
		return `${Math.floor(s / 86400)}d`;
	return (date.getFullYear() === new Date().getFullYear() ? fmtDay :
	    fmtDayYear).format(date);
}

// "14:05", "Mon 14:05", then a date and time: for chat messages.
function clock(date) {
	const now = new Date();
	if (sameDay(date, now))
		return fmtClock.format(date);
	if (now - date < 6 * 86400 * 1000)
		return fmtWeekday.format(date);
	return `${fmtDay.format(date)}, ${fmtClock.format(date)}`;
}

function timeEl(iso, kind, testid) {
	const date = new Date(iso);
	const node = el('time', { datetime: iso, title: fmtFull.format(date),
	    testid, data: { kind } });
	node.textContent = kind === 'ago' ? ago(date) : clock(date);
	return node;
}

// Relative times go stale while a page stays open: refresh them.
function refreshTimes() {
	for (const t of document.querySelectorAll('time[data-kind="ago"]'))
		t.textContent = ago(new Date(t.getAttribute('datetime')));
}

/* --- API --------------------------------------------------------------- */

class ApiError extends Error {
	constructor(message, status, handled = false) {
		super(message);
		this.name = 'ApiError';
		this.status = status;
		this.handled = handled;   // already dealt with (session ended)
	}
}

const UNREACHABLE = 'Cannot reach the server. Check your connection and ' +
    'try again.';

/*
 * One JSON request to the server, same origin, so the session cookie goes
 * with it. Resolves to the parsed body (null for 204); rejects with an
 * ApiError whose message a person can read, or an AbortError when the
 * view that asked has gone.
 */
async function api(path, { method = 'GET', body, signal } = {}) {
	const init = { method, signal, credentials: 'same-origin',
	    headers: { Accept: 'application/json' } };
	if (body !== undefined) {
		init.headers['Content-Type'] = 'application/json';
		init.body = JSON.stringify(body);
	}
	let res;
	try {
		res = await fetch(path, init);
	} catch (err) {
		if (err.name === 'AbortError')
			throw err;
		throw new ApiError(UNREACHABLE, 0);
	}
	let data = null;
	if (res.status !== 204) {
		try {
			data = await res.json();
		} catch (err) {
			if (err.name === 'AbortError')
				throw err;
			// Not JSON: a proxy's error page, say. The status speaks;
			// but a success whose body never arrived whole (the
			// connection broke while it was read) is no answer.
			if (res.ok)
				throw new ApiError(UNREACHABLE, 0);
		}
	}
	if (res.ok)
		return data;
	// A session that ends under us (logged out elsewhere, expired,
	// account deleted) sends the person back to the login screen.
	if (res.status === 401 && state.me !== null) {
		sessionEnded();
		throw new ApiError('Your session has ended.', 401, true);
	}
	throw new ApiError(errorText(res, data), res.status);
}

/*
 * Every room: getRooms answers a page at a time (at most 200, each page
 * after the last room of the one before), in creation order.
 */
async function allRooms(signal) {
	const rooms = [];
	for (;;) {
		const after = rooms.length ?
		    `&after=${encodeURIComponent(rooms[rooms.length - 1].id)}` : '';
		const page = await api(`/ws/getRooms?limit=200${after}`,
		    { signal });
		rooms.push(...page);
		if (page.length < 200)
			return rooms;
	}
}

function errorText(res, data) {
	if (res.status === 429) {
		const secs = parseInt(res.headers.get('Retry-After'), 10) || 60;
		const mins = Math.max(1, Math.ceil(secs / 60));
		return `Too many attempts, try again in ${plural(mins, 'minute')}.`;
	}
	if (res.status === 503)
		return 'The server is having trouble reaching its database, ' +
		    'try again.';
	if (data && typeof data.error === 'string' && data.error !== '')
		return data.error[0].toUpperCase() + data.error.slice(1);
	return `The server answered ${res.status} ${res.statusText}`.trim();
}

/* --- Error banner and confirm dialog ------------------------------------ */

const bannerText = el('p', { class: 'banner-text', role: 'alert',
    testid: 'error' });
const banner = el('div', { class: 'banner', hidden: true }, bannerText,
    el('button', { type: 'button', class: 'icon-btn banner-close',
	'aria-label': 'Dismiss', title: 'Dismiss', onclick: clearError },
	icon('close')));

function showError(message) {
	bannerText.textContent = message;
	banner.hidden = false;
}

function clearError() {
	banner.hidden = true;
	bannerText.textContent = '';
}

// Shows what went wrong, unless nobody is waiting for the answer any more.
function report(err) {
	if (err.name === 'AbortError' || err.handled)
		return;
	if (!(err instanceof ApiError))
		console.error(err);
	showError(err.message || String(err));
}

/* A modal question; resolves to true for yes. The safe answer has focus. */
function confirmDialog({ title, text, yes }) {
	return new Promise((resolve) => {
		const no = el('button', { type: 'button', class: 'btn',
		    testid: 'confirm-no', text: 'Cancel' });
		const ok = el('button', { type: 'button', class: 'btn btn-danger',
		    testid: 'confirm-yes', text: yes });
		const dialog = el('dialog', { class: 'dialog',
		    testid: 'confirm-dialog', 'aria-labelledby': 'dialog-title' },
		    el('div', { class: 'dialog-body' },
			el('h2', { id: 'dialog-title', text: title }),
			el('p', { text }),
			el('div', { class: 'dialog-actions' }, no, ok)));
		const finish = (answer) => {
			dialog.close();
			dialog.remove();
			resolve(answer);
		};
		no.addEventListener('click', () => finish(false));
		ok.addEventListener('click', () => finish(true));
		dialog.addEventListener('cancel', (e) => {
			e.preventDefault();
			finish(false);
		});
		// The dialog box itself has no padding: a click on the dialog
		// element is a click on the backdrop.
		dialog.addEventListener('click', (e) => {
			if (e.target === dialog)
				finish(false);
		});
		document.body.append(dialog);
		dialog.showModal();
		no.focus();
	});
}

/* --- Network state and unread counts ----------------------------------- */

// The browser's offline and online events, shown at once wherever one is
// (the chat view also stops and resumes its connection on them).
const netBanner = el('div', { class: 'net-banner', testid: 'offline-banner',
    role: 'status', hidden: true }, el('span', { class: 'status-dot' }),
    el('span', { text: 'You are offline. What you write is sent once the ' +
	'connection is back.' }));

function showNetwork() {
	netBanner.hidden = navigator.onLine;
}

/*
 * Unread messages: per room from getRooms (`unread`, SPEC §9), asked every
 * few seconds (the rooms view asks anyway); for the room on screen,
 * counted here from the messages that came while the reader was not
 * looking. The room list shows every room's count. The tab title and the
 * Rooms link add up those of the rooms one is in: private rooms, direct
 * rooms, and the public rooms opened in this browser (a public room never
 * read has all its messages unread: a newcomer's title would say 99+).
 */
const unread = {
	rooms: new Map(),   // room id → {count, mine}, from the last getRooms
	roomId: null,       // the room on screen
	here: 0,            // its messages not seen yet
	title: 'GoChat',    // the title without the count
};

const countText = (n) => n > 99 ? '99+' : String(n);

function setTitle(text) {
	unread.title = text;
	showUnread();
}

function showUnread() {
	let n = unread.here;
	for (const [id, { count, mine }] of unread.rooms) {
		if (id !== unread.roomId && mine)
			n += count;
	}
	document.title = (n > 0 ? `(${countText(n)}) ` : '') + unread.title;
	const badge = document.querySelector('[data-testid="nav-unread"]');
	if (badge) {
		badge.textContent = countText(n);
		badge.hidden = n === 0;
	}
}

function noteRooms(rooms) {
	const opened = openedRooms();
	unread.rooms = new Map(rooms.map((r) => [r.id, {
	    count: Number.isSafeInteger(r.unread) && r.unread > 0 ? r.unread : 0,
	    mine: r.private === true || opened.has(r.id) }]));
	showUnread();
}

// The public rooms opened in this browser, per user (localStorage may be
// refused: then none).
const openedKey = () => `gochat.opened.${state.me.id}`;

function openedRooms() {
	try {
		const ids = JSON.parse(localStorage.getItem(openedKey()));
		return new Set(Array.isArray(ids) ? ids : []);
	} catch {
		return new Set();
	}
}

function noteOpened(roomId) {
	const ids = openedRooms();
	if (ids.has(roomId))
		return;
	ids.add(roomId);
	try {
		localStorage.setItem(openedKey(), JSON.stringify([...ids]));
	} catch {
		// private browsing: the title counts fewer rooms
	}
}

// In the background, except on the rooms view while it is seen (it asks
// every 3 s then).
async function pollUnread() {
	const [page, id] = routeParts();
	if (state.me === null || page === 'rooms' && !id && !document.hidden)
		return;
	try {
		noteRooms(await allRooms());
	} catch {
		// offline, or the server is away: the next round will tell
	}
}

/* --- Router ------------------------------------------------------------ */

const app = document.getElementById('app');
const main = document.getElementById('main');

function mount(node) {
	main.replaceChildren(node);
}

// Navigates, or renders again when already there (no hashchange then).
function go(hash) {
	if (location.hash === hash)
		render();
	else
		location.hash = hash;
}

function routeParts() {
	return location.hash.replace(/^#\/?/, '').split('/').filter(Boolean)
	    .map((p) => {
		try {
			return decodeURIComponent(p);
		} catch {
			return p;
		}
	    });
}

/*
 * Each view gets a context: its signal aborts the view's requests when
 * another view replaces it, and onLeave() registers clean-ups (timers,
 * sockets) run at that moment.
 */
function newView() {
	if (state.view) {
		state.view.controller.abort();
		for (const fn of state.view.cleanups)
			fn();
	}
	const controller = new AbortController();
	const cleanups = [];
	state.view = { controller, cleanups, signal: controller.signal,
	    onLeave: (fn) => cleanups.push(fn) };
	return state.view;
}

function render() {
	clearError();
	const ctx = newView();
	const [page, id, tab] = routeParts();
	window.scrollTo(0, 0);

	if (state.me === null) {
		if (page === 'register')
			return authView(ctx, 'register');
		if (page !== 'login') {
			state.after = location.hash || null;
			history.replaceState(null, '', '#/login');
		}
		return authView(ctx, 'login');
	}
	if (!page || page === 'login' || page === 'register') {
		history.replaceState(null, '', '#/feed');
		return render();
	}
	const userId = Number(id);
	const own = page === 'users' && userId === state.me.id;
	markNav(page === 'feed' ? 'feed' : page === 'rooms' ? 'rooms' :
	    own ? 'profile' : null);
	if (page === 'feed' && !id)
		return feedView(ctx);
	if (page === 'rooms' && !id)
		return roomsView(ctx);
	if (page === 'rooms' && !tab)
		return chatView(ctx, id);
	if (page === 'users' && Number.isSafeInteger(userId) && userId > 0 &&
	    [undefined, 'followers', 'following'].includes(tab))
		return profileView(ctx, userId, tab || 'posts');
	return notFoundView();
}

function emptyState(title, text, ...actions) {
	return el('div', { class: 'card empty-state' },
	    el('h2', { text: title }), el('p', { text }), ...actions);
}

function notFoundView() {
	setTitle('Not found · GoChat');
	mount(el('section', { class: 'view view-narrow' },
	    emptyState('Nothing here', 'This page does not exist.',
		el('a', { class: 'btn btn-primary', href: '#/feed',
		    text: 'Go to your feed' }))));
}

/* --- Auth: log in, register, log out ------------------------------------ */

function field(label, input, hint) {
	return el('label', { class: 'field' },
	    el('span', { class: 'field-label', text: label }), input,
	    hint ? el('span', { class: 'field-hint', text: hint }) : null);
}

// Runs a form's request with its button disabled and saying so.
async function busy(button, label, work) {
	const idle = button.textContent;
	button.disabled = true;
	button.textContent = label;
	try {
		await work();
	} catch (err) {
		report(err);
	} finally {
		button.disabled = false;
		button.textContent = idle;
	}
}

function authView(ctx, mode) {
	const register = mode === 'register';
	setTitle(`${register ? 'Create an account' : 'Log in'} · GoChat`);
	const notice = state.notice;
	state.notice = null;
	const form = register ? registerForm(ctx) : loginForm(ctx);
	mount(el('section', { class: 'auth', testid: 'auth-view' },
	    el('div', { class: 'auth-brand' },
		el('img', { src: '/favicon.svg', alt: '', width: 48, height: 48 }),
		el('h1', { text: 'GoChat' }),
		el('p', { text: 'Chat rooms and short posts with the people ' +
		    'you follow.' })),
	    el('div', { class: 'card auth-card' },
		notice ? el('p', { class: 'auth-notice', role: 'status',
		    text: notice }) : null,
		form)));
	form.querySelector('input').focus();
}

function loginForm(ctx) {
	const name = el('input', { testid: 'login-name', name: 'username',
	    autocomplete: 'username', required: true, autocapitalize: 'none',
	    spellcheck: 'false' });
	const password = el('input', { testid: 'login-password', type: 'password',
	    name: 'password', autocomplete: 'current-password', required: true });
	const submit = el('button', { type: 'submit', class: 'btn btn-primary ' +
	    'btn-block', testid: 'login-submit', text: 'Log in' });
	const form = el('form', { class: 'form', testid: 'login-form' },
	    el('h2', { text: 'Welcome back' }),
	    field('Username or email', name), field('Password', password),
	    submit,
	    el('p', { class: 'form-switch' }, 'New to GoChat? ',
		el('a', { href: '#/register', testid: 'show-register',
		    text: 'Create an account' })));
	form.addEventListener('submit', (e) => {
		e.preventDefault();
		clearError();
		const who = name.value.trim();
		const body = who.includes('@') ? { email: who } : { username: who };
		body.password = password.value;
		busy(submit, 'Logging in…', async () => {
			loggedIn(await api('/login', { method: 'POST', body,
			    signal: ctx.signal }));
		});
	});
	return form;
}

function registerForm(ctx) {
	const username = el('input', { testid: 'register-username',
	    name: 'username', autocomplete: 'username', required: true,
	    maxlength: 32, pattern: '[A-Za-z0-9_.\\-]+', autocapitalize: 'none',
	    spellcheck: 'false' });
	const email = el('input', { testid: 'register-email', type: 'email',
	    name: 'email', autocomplete: 'email', required: true,
	    maxlength: 254 });
	const password = el('input', { testid: 'register-password',
	    type: 'password', name: 'password', autocomplete: 'new-password',
	    required: true, minlength: 8 });
	const submit = el('button', { type: 'submit', class: 'btn btn-primary ' +
	    'btn-block', testid: 'register-submit', text: 'Create account' });
	const form = el('form', { class: 'form', testid: 'register-form' },
	    el('h2', { text: 'Create your account' }),
	    field('Username', username, 'Letters, digits, _ . and -, ' +
		'up to 32 characters.'),
	    field('Email', email),
	    field('Password', password, 'At least 8 characters.'),
	    submit,
	    el('p', { class: 'form-switch' }, 'Already have an account? ',
		el('a', { href: '#/login', testid: 'show-login',
		    text: 'Log in' })));
	form.addEventListener('submit', (e) => {
		e.preventDefault();
		clearError();
		const body = { username: username.value.trim(),
		    email: email.value.trim(), password: password.value };
		busy(submit, 'Creating your account…', async () => {
			loggedIn(await api('/register', { method: 'POST', body,
			    signal: ctx.signal }));
		});
	});
	return form;
}

function loggedIn(account) {
	state.me = { id: account.id, username: account.username,
	    email: account.email };
	renderTopbar();
	const after = state.after;
	state.after = null;
	go(after && after !== '#/login' && after !== '#/register' ? after :
	    '#/feed');
	pollUnread();
}

function loggedOut(notice) {
	state.me = null;
	unread.rooms.clear();
	state.notice = notice;
	document.querySelector('.topbar')?.remove();
	app.classList.remove('has-topbar');
	go('#/login');
}

function sessionEnded() {
	state.after = location.hash;
	loggedOut('Your session has ended. Please log in again.');
}

async function logout() {
	try {
		await api('/logout', { method: 'POST' });
	} catch (err) {
		if (!err.handled) {
			report(err);
			return;
		}
	}
	if (state.me !== null)
		loggedOut('You are logged out.');
}

/* --- Top bar ------------------------------------------------------------ */

function renderTopbar() {
	document.querySelector('.topbar')?.remove();
	const me = state.me;
	const navLink = (name, href, label, badge) => el('a', {
	    class: 'nav-link', href, testid: `nav-${name}`, data: { nav: name },
	    title: label },
	    icon(name === 'profile' ? 'user' : name),
	    el('span', { class: 'nav-label', text: label }), badge);
	const search = el('input', { type: 'search', testid: 'user-search',
	    placeholder: 'Find people', 'aria-label': 'Find a user by username',
	    autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false',
	    maxlength: 32 });
	const form = el('form', { class: 'search', role: 'search' },
	    search,
	    el('button', { type: 'submit', class: 'icon-btn',
		testid: 'user-search-submit', 'aria-label': 'Search',
		title: 'Search' }, icon('search')));
	form.addEventListener('submit', (e) => {
		e.preventDefault();
		findUser(search);
	});
	const bar = el('header', { class: 'topbar' },
	    el('div', { class: 'topbar-inner' },
		el('a', { class: 'brand', href: '#/feed' },
		    el('img', { src: '/favicon.svg', alt: '', width: 28,
			height: 28 }),
		    el('span', { class: 'brand-name', text: 'GoChat' })),
		el('nav', { class: 'nav', 'aria-label': 'Main' },
		    navLink('feed', '#/feed', 'Feed'),
		    navLink('rooms', '#/rooms', 'Rooms', el('span', {
			class: 'nav-badge', testid: 'nav-unread', hidden: true,
			title: 'Unread messages' })),
		    navLink('profile', userHref(me.id), 'Profile')),
		form,
		el('a', { class: 'current-user', href: userHref(me.id),
		    testid: 'current-user', title: 'Your profile' },
		    avatar(me.username, 'sm'),
		    el('span', { class: 'current-user-name', text: me.username })),
		el('button', { type: 'button', class: 'icon-btn',
		    testid: 'nav-logout', 'aria-label': 'Log out',
		    title: 'Log out', onclick: logout }, icon('logout'))));
	app.prepend(bar);
	app.classList.add('has-topbar');
	showUnread();
}

function markNav(current) {
	for (const link of document.querySelectorAll('.nav-link')) {
		if (link.dataset.nav === current)
			link.setAttribute('aria-current', 'page');
		else
			link.removeAttribute('aria-current');
	}
}

async function findUser(input) {
	const name = input.value.trim();
	if (name === '')
		return;
	clearError();
	try {
		const user = await api('/users?username=' +
		    encodeURIComponent(name));
		input.value = '';
		go(userHref(user.id));
	} catch (err) {
		if (err.status === 404)
			showError(`No such user: ${name}`);
		else
			report(err);
	}
}

/* --- Posts and the feed ------------------------------------------------- */

/*
 * A list filled page by page: path answers an array, newest (highest id)
 * first; the next page is the items before the last id shown.
 */
function pager(ctx, { path, size, list, more, empty, item }) {
	let before = null;
	async function load() {
		more.disabled = true;
		const query = new URLSearchParams({ limit: size });
		if (before !== null)
			query.set('before', before);
		try {
			const items = await api(`${path}?${query}`,
			    { signal: ctx.signal });
			list.append(...items.map(item));
			if (items.length > 0)
				before = items[items.length - 1].id;
			more.hidden = items.length < size;
			empty.hidden = list.childElementCount > 0;
		} catch (err) {
			report(err);
		} finally {
			more.disabled = false;
		}
	}
	more.addEventListener('click', load);
	load();
}

function postItem(post, onRemoved) {
	const mine = post.user_id === state.me.id;
	const remove = mine ? el('button', { type: 'button',
	    class: 'icon-btn post-delete', testid: 'post-delete',
	    'aria-label': 'Delete post', title: 'Delete post' }, icon('trash')) :
	    null;
	const item = el('li', { class: 'post card', testid: 'post',
	    data: { id: post.id } },
	    el('a', { class: 'post-avatar', href: userHref(post.user_id),
		tabindex: -1, 'aria-hidden': 'true' }, avatar(post.username)),
	    el('div', { class: 'post-main' },
		el('div', { class: 'post-head' },
		    el('a', { class: 'post-user', href: userHref(post.user_id),
			testid: 'post-user', text: post.username }),
		    el('span', { class: 'sep', 'aria-hidden': 'true', text: '·' }),
		    timeEl(post.created_at, 'ago', 'post-time'),
		    remove),
		el('p', { class: 'post-content', testid: 'post-content',
		    text: post.content })));
	remove?.addEventListener('click', async () => {
		const yes = await confirmDialog({ title: 'Delete this post?',
		    text: 'It disappears from your profile and from your ' +
			'followers’ feeds. This cannot be undone.',
		    yes: 'Delete' });
		if (!yes)
			return;
		try {
			await api(`/posts/${post.id}`, { method: 'DELETE' });
			item.remove();
			onRemoved?.();
		} catch (err) {
			report(err);
		}
	});
	return item;
}

function postComposer(ctx, onPosted) {
	const input = el('textarea', { class: 'composer-input',
	    testid: 'post-input', rows: 3, placeholder: 'What’s on your mind?',
	    'aria-label': 'New post' });
	const counter = el('span', { class: 'counter', testid: 'post-counter' });
	const hint = el('span', { class: 'composer-hint', 'aria-live': 'polite' });
	const submit = el('button', { type: 'submit', class: 'btn btn-primary',
	    testid: 'post-submit', text: 'Post' });
	const form = el('form', { class: 'card composer' }, input,
	    el('div', { class: 'composer-foot' }, hint, counter, submit));

	function update() {
		const n = [...input.value].length;   // code points, as the server
		const over = n - POST_MAX_CHARS;
		counter.textContent = `${n}/${POST_MAX_CHARS}`;
		counter.classList.toggle('over', over > 0);
		hint.textContent = over > 0 ?
		    `${plural(over, 'character')} too many` : '';
		submit.disabled = over > 0 || input.value.trim() === '';
	}
	input.addEventListener('input', update);
	input.addEventListener('keydown', (e) => {
		if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
			e.preventDefault();
			form.requestSubmit();
		}
	});
	form.addEventListener('submit', (e) => {
		e.preventDefault();
		if (submit.disabled)
			return;
		clearError();
		busy(submit, 'Posting…', async () => {
			const post = await api('/posts', { method: 'POST',
			    body: { content: input.value }, signal: ctx.signal });
			input.value = '';
			onPosted(post);
		}).then(update);
	});
	update();
	return form;
}

function feedView(ctx) {
	setTitle('Feed · GoChat');
	const list = el('ol', { class: 'posts', testid: 'feed-list' });
	const empty = el('div', { class: 'empty', hidden: true },
	    el('p', { text: 'Your feed is empty.' }),
	    el('p', { class: 'muted', text: 'Write your first post, or find ' +
		'people to follow with the search box: their posts show up ' +
		'here.' }));
	const more = el('button', { type: 'button', class: 'btn btn-ghost more',
	    testid: 'feed-more', hidden: true, text: 'Load more' });
	const onRemoved = () => { empty.hidden = list.childElementCount > 0; };
	const composer = postComposer(ctx, (post) => {
		list.prepend(postItem(post, onRemoved));
		empty.hidden = true;
	});
	mount(el('section', { class: 'view view-narrow', testid: 'feed-view' },
	    el('h1', { class: 'page-title', text: 'Feed' }),
	    composer, list, empty, more));
	pager(ctx, { path: '/feed', size: FEED_PAGE, list, more, empty,
	    item: (p) => postItem(p, onRemoved) });
}

/* --- Profiles ----------------------------------------------------------- */

async function isFollowing(ctx, id) {
	// Followers come highest id first: the first one at or below my id
	// is me exactly when I follow them.
	const page = await api(`/users/${id}/followers?before=` +
	    `${state.me.id + 1}&limit=1`, { signal: ctx.signal });
	return page.length > 0 && page[0].id === state.me.id;
}

async function profileView(ctx, id, tab) {
	setTitle('Profile · GoChat');
	const own = id === state.me.id;
	const view = el('section', { class: 'view view-narrow',
	    testid: 'profile-view', data: { userId: id } },
	    el('p', { class: 'loading', text: 'Loading…' }));
	mount(view);
	let user, following = false;
	try {
		[user, following] = await Promise.all([
		    api(`/users/${id}`, { signal: ctx.signal }),
		    own ? false : isFollowing(ctx, id)]);
	} catch (err) {
		if (err.status === 404)
			view.replaceChildren(emptyState('No such user',
			    'This account does not exist, or was deleted.'));
		else
			report(err);
		return;
	}
	setTitle(`${user.username} · GoChat`);

	const counts = {
	    posts: el('strong', { testid: 'profile-posts' }),
	    followers: el('strong', { testid: 'profile-followers' }),
	    following: el('strong', { testid: 'profile-following' }),
	};
	const showCounts = (u) => {
		for (const key of Object.keys(counts))
			counts[key].textContent = String(u[key]);
	};
	showCounts(user);
	const tabLink = (name, href, label, testid) => el('a', {
	    class: 'tab', href, testid,
	    'aria-current': name === tab ? 'page' : null },
	    counts[name], el('span', { text: label }));

	const actions = own ?
	    el('button', { type: 'button', class: 'btn btn-danger-ghost',
		testid: 'delete-account', text: 'Delete account',
		onclick: deleteAccount }) :
	    el('div', { class: 'profile-actions' },
		messageButton(ctx, id),
		followButton(ctx, id, following, showCounts));
	const joined = `Joined ${fmtMonth.format(new Date(user.created_at))}`;
	view.replaceChildren(
	    el('div', { class: 'card profile-card' },
		el('div', { class: 'profile-head' },
		    avatar(user.username, 'xl'),
		    el('div', { class: 'profile-names' },
			el('h1', { testid: 'profile-username',
			    text: user.username }),
			el('p', { class: 'muted', text: own && state.me.email ?
			    `${joined} · ${state.me.email}` : joined })),
		    actions),
		el('nav', { class: 'tabs', 'aria-label': 'Profile' },
		    tabLink('posts', userHref(id), 'posts', null),
		    tabLink('followers', `${userHref(id)}/followers`, 'followers',
			'profile-show-followers'),
		    tabLink('following', `${userHref(id)}/following`, 'following',
			'profile-show-following'))),
	    tab === 'posts' ? profilePosts(ctx, user, counts.posts) :
		profileUsers(ctx, user, tab));
}

// The direct room with user id (SPEC §10: made on the first call).
function messageButton(ctx, id) {
	const button = el('button', { type: 'button', class: 'btn',
	    testid: 'message-button', text: 'Message' });
	button.addEventListener('click', () => {
		clearError();
		busy(button, 'Opening…', async () => {
			const room = await api(`/ws/dm/${id}`, { method: 'POST',
			    signal: ctx.signal });
			go(roomHref(room.id));
		});
	});
	return button;
}

function followButton(ctx, id, following, showCounts) {
	const button = el('button', { type: 'button', class: 'btn',
	    testid: 'follow-button' });
	const set = (on) => {
		button.dataset.following = String(on);
		button.textContent = on ? 'Unfollow' : 'Follow';
		button.classList.toggle('btn-primary', !on);
	};
	set(following);
	button.addEventListener('click', async () => {
		const on = button.dataset.following === 'true';
		button.disabled = true;
		try {
			await api(on ? `/unfollow?toUnfollowId=${id}` :
			    `/follow?toFollowId=${id}`,
			    { method: 'POST', signal: ctx.signal });
			set(!on);
			showCounts(await api(`/users/${id}`, { signal: ctx.signal }));
		} catch (err) {
			report(err);
		} finally {
			button.disabled = false;
		}
	});
	return button;
}

function profilePosts(ctx, user, count) {
	const list = el('ol', { class: 'posts', testid: 'profile-post-list' });
	const empty = el('p', { class: 'empty', hidden: true,
	    text: user.id === state.me.id ? 'You have not posted yet.' :
		`${user.username} has not posted yet.` });
	const more = el('button', { type: 'button', class: 'btn btn-ghost more',
	    testid: 'profile-more', hidden: true, text: 'Load more' });
	const onRemoved = () => {
		count.textContent = String(Math.max(0,
		    Number(count.textContent) - 1));
		empty.hidden = list.childElementCount > 0;
	};
	pager(ctx, { path: `/users/${user.id}/posts`, size: FEED_PAGE, list,
	    more, empty, item: (p) => postItem(p, onRemoved) });
	return el('div', { class: 'tab-panel' }, list, empty, more);
}

function profileUsers(ctx, user, which) {
	const list = el('ul', { class: 'card user-list', testid: 'user-list',
	    'aria-label': `${user.username}’s ${which}` });
	const own = user.id === state.me.id;
	const empty = el('p', { class: 'empty', hidden: true,
	    text: which === 'followers' ?
		`${own ? 'You have' : `${user.username} has`} no followers yet.` :
		`${own ? 'You follow' : `${user.username} follows`} nobody yet.` });
	const more = el('button', { type: 'button', class: 'btn btn-ghost more',
	    testid: 'user-list-more', hidden: true, text: 'Load more' });
	const item = (u) => el('li', {},
	    el('a', { class: 'user-item', href: userHref(u.id),
		testid: 'user-item' }, avatar(u.username),
		el('span', { class: 'user-item-name', text: u.username }),
		u.id === state.me.id ? el('span', { class: 'badge',
		    text: 'you' }) : null));
	pager(ctx, { path: `/users/${user.id}/${which}`, size: USERS_PAGE, list,
	    more, empty, item });
	return el('div', { class: 'tab-panel' }, list, empty, more);
}

async function deleteAccount() {
	const yes = await confirmDialog({ title: 'Delete your account?',
	    text: 'Your profile, posts and follows are removed for good and ' +
		'you are logged out everywhere. Your past chat messages stay ' +
		'in their rooms under your name.',
	    yes: 'Delete account' });
	if (!yes)
		return;
	try {
		await api('/delete', { method: 'DELETE' });
		loggedOut('Your account has been deleted.');
	} catch (err) {
		report(err);
	}
}

/* --- Rooms -------------------------------------------------------------- */

function roomsView(ctx) {
	setTitle('Rooms · GoChat');
	const list = el('ul', { class: 'room-list', testid: 'room-list' });
	// Direct rooms apart (SPEC §10: named after the other user).
	const dmList = el('ul', { class: 'room-list', testid: 'dm-list' });
	const dmEmpty = el('p', { class: 'empty', text: 'No conversations ' +
	    'yet. Open a profile and press Message.' });
	const empty = el('p', { class: 'empty', hidden: true,
	    text: 'No rooms yet. Create the first one.' });
	// room id → {node, name, clients, count, unread}
	const items = new Map();

	function roomItem(room) {
		const name = el('a', { class: 'room-name', href: roomHref(room.id),
		    testid: 'room-name' });
		const clients = el('span', { testid: 'room-clients' });
		const badge = el('span', { class: 'unread-badge',
		    testid: 'room-unread', hidden: true,
		    title: 'Unread messages' });
		const count = el('span', { class: 'room-count' },
		    el('span', { class: 'live-dot', 'aria-hidden': 'true' }),
		    clients, ' online');
		const node = el('li', { class: 'card room', testid: room.dm ?
		    'dm-item' : 'room-item', data: { roomId: room.id,
		    private: String(room.private) } },
		    avatar(room.name || room.id, 'md', room.dm ? 'avatar' :
			'room-badge'),
		    el('div', { class: 'room-text' }, name,
			room.dm ? null : el('span', { class: 'room-id',
			    text: `#${room.id}` }),
			room.private && !room.dm ? el('span', { class: 'badge',
			    testid: 'room-private', text: 'private' }) : null),
		    badge, count,
		    el('a', { class: 'btn btn-primary btn-small',
			href: roomHref(room.id), testid: 'room-join',
			text: 'Join' }));
		return { node, name, clients, count, unread: badge };
	}

	// Updates in place, so a refresh never moves focus or flickers.
	async function refresh() {
		const rooms = await allRooms(ctx.signal);
		noteRooms(rooms);
		const seen = new Set();
		for (const room of rooms) {
			seen.add(room.id);
			let item = items.get(room.id);
			if (!item) {
				item = roomItem(room);
				items.set(room.id, item);
				(room.dm ? dmList : list).append(item.node);
			}
			item.name.textContent = room.name;
			item.clients.textContent = String(room.clients);
			item.count.classList.toggle('is-live', room.clients > 0);
			const { count: n, mine } = unread.rooms.get(room.id);
			item.unread.textContent = countText(n);
			item.unread.hidden = n === 0;
			// Muted for public rooms never opened here (not in the
			// title's count).
			item.unread.classList.toggle('is-muted', !mine);
			item.node.classList.toggle('has-unread', n > 0);
		}
		for (const [id, item] of items) {
			if (!seen.has(id)) {
				item.node.remove();
				items.delete(id);
			}
		}
		empty.hidden = list.children.length > 0;
		dmEmpty.hidden = dmList.children.length > 0;
	}

	const roomId = el('input', { testid: 'room-create-id', maxlength: 64,
	    pattern: '[A-Za-z0-9_\\-]+', placeholder: 'coffee-corner',
	    autocomplete: 'off', autocapitalize: 'none', spellcheck: 'false' });
	const roomName = el('input', { testid: 'room-create-name',
	    maxlength: 100, placeholder: 'Coffee corner', autocomplete: 'off' });
	const isPrivate = el('input', { type: 'checkbox',
	    testid: 'room-create-private' });
	const submit = el('button', { type: 'submit', class: 'btn btn-primary',
	    testid: 'room-create-submit', text: 'Create room' });
	const form = el('form', { class: 'card form create-room' },
	    el('h2', { text: 'New room' }),
	    field('Name', roomName),
	    field('ID (optional)', roomId, 'Letters, digits, _ and -. Left ' +
		'empty, one is made for you.'),
	    el('label', { class: 'check' }, isPrivate,
		el('span', { text: ' Private: only the members you add can ' +
		    'see it' })),
	    submit);
	form.addEventListener('submit', (e) => {
		e.preventDefault();
		clearError();
		// Empty fields are left out: the server picks an id, and the
		// name defaults to the id.
		const body = {};
		if (roomId.value.trim() !== '')
			body.id = roomId.value.trim();
		if (roomName.value.trim() !== '')
			body.name = roomName.value.trim();
		if (isPrivate.checked)
			body.private = true;
		busy(submit, 'Creating…', async () => {
			const room = await api('/ws/createRoom', { method: 'POST',
			    body, signal: ctx.signal });
			roomId.value = '';
			roomName.value = '';
			isPrivate.checked = false;
			await refresh();
			const item = items.get(room.id);
			item?.node.classList.add('is-new');
			item?.node.scrollIntoView({ block: 'nearest' });
		});
	});

	mount(el('section', { class: 'view rooms', testid: 'rooms-view' },
	    el('div', { class: 'rooms-main' },
		el('h1', { class: 'page-title', text: 'Rooms' }),
		list, empty,
		el('h2', { class: 'page-title', text: 'Direct messages' }),
		dmList, dmEmpty),
	    form));
	refresh().catch(report);
	const timer = setInterval(() => {
		if (!document.hidden)
			refresh().catch(report);
	}, ROOMS_REFRESH_MS);
	ctx.onLeave(() => clearInterval(timer));
}

/* --- Chat --------------------------------------------------------------- */

// since: resume after that event id (SPEC §9), or null for the join
// history.
function wsUrl(roomId, since) {
	return (location.protocol === 'https:' ? 'wss://' : 'ws://') +
	    location.host + '/ws/joinRoom/' + encodeURIComponent(roomId) +
	    (since === null ? '' : `?since=${since}`);
}

// A message's client id (SPEC §9): random, kept while the message waits
// for its ack, so that a resend after a reconnect is known to be the same.
function newCid() {
	const bytes = crypto.getRandomValues(new Uint8Array(12));
	return Array.from(bytes, (b) => b.toString(16).padStart(2, '0'))
	    .join('');
}

/*
 * The chat view speaks gochat.v2 (SPEC §9) when the server grants it, §5
 * otherwise (no acks, edits, deletes, typing or read markers then).
 *
 * Sending: a message goes into the outbox and shows as pending at the
 * bottom. One at a time is sent with its cid (the next once the ack has
 * come), so that the order is kept even when the server says "rate
 * limited"; after a reconnect the one without an ack is sent again with
 * the same cid, which the server acknowledges with the first one's id
 * instead of storing it twice. Messages written while disconnected wait
 * in the outbox.
 *
 * Receiving: lastId is the newest room event (message, edit, delete) the
 * sockets delivered, in order; every reconnect asks for ?since=lastId,
 * so nothing is missed and nothing comes twice. A gap event (more missed
 * than the server replays) leaves a marker that loads the rest.
 */
function chatView(ctx, roomId) {
	setTitle(`#${roomId} · GoChat`);
	const enc = encodeURIComponent(roomId);
	const me = state.me.id;
	const chat = {
		ws: null,
		delay: RECONNECT_MIN_MS,
		timer: null,
		stopped: false,
		wasOnline: false,        // a socket opened once: now "reconnecting"
		joined: false,           // my first join notice was shown
		synced: false,           // this socket's own join came: list asked
		members: new Map(),      // user id → username
		gone: new Map(),         // user id → timer of a leave not yet told
		ids: [],                 // message ids shown, ascending
		nodes: new Map(),        // message id → element
		olderDone: false,        // no older history left
		sentAt: 0,               // when I last sent a message
		v2: false,               // the socket speaks gochat.v2
		askV2: true,             // ask for it (not after refusals)
		refusals: 0,             // handshakes failed in a row asking
		lastId: 0,               // newest room event id the sockets gave
		resumable: false,        // a join completed: reconnects resume
		resuming: false,         // this socket replays what was missed
		owner: null,             // the room's owner: may delete anything
		outbox: [],              // messages without an ack, in order
		inFlight: null,          // the one sent, waiting for its ack
		retryTimer: null,        // sends again after "rate limited"
		edits: [],               // edits sent: {id, node, old}
		deletes: [],             // ids of the deletes sent
		typing: new Map(),       // user id → {username, timer}
		typingSentAt: 0,
		seenId: 0,               // newest message the reader has seen
		readSent: 0,             // newest read marker sent
		readTimer: null,
	};
	unread.roomId = roomId;
	unread.here = 0;
	noteOpened(roomId);

	const title = el('h1', { class: 'chat-title', testid: 'chat-title',
	    text: roomId });
	const statusText = el('span', { class: 'status-text' });
	const status = el('span', { class: 'chat-status', testid: 'chat-status',
	    role: 'status' }, el('span', { class: 'status-dot' }), statusText);
	const older = el('button', { type: 'button', testid: 'chat-older',
	    class: 'btn btn-ghost btn-small chat-older', hidden: true,
	    text: 'Load older messages' });
	const start = el('p', { class: 'chat-start', hidden: true,
	    text: 'This is the beginning of the room.' });
	const list = el('ol', { class: 'chat-messages',
	    testid: 'chat-messages' });
	const empty = el('p', { class: 'chat-empty',
	    text: 'No messages yet. Say hello!' });
	// Messages without an ack yet, below the others.
	const pendingList = el('ol', { class: 'chat-messages chat-pending',
	    testid: 'chat-pending' });
	const scroller = el('div', { class: 'chat-scroll' }, older, start, list,
	    pendingList, empty);
	const typingLine = el('p', { class: 'chat-typing', testid: 'chat-typing',
	    'aria-live': 'polite', hidden: true });
	const jump = el('button', { type: 'button', class: 'chat-jump',
	    hidden: true, text: 'New messages ↓' });
	const input = el('textarea', { class: 'chat-input', testid: 'chat-input',
	    rows: 1, placeholder: 'Write a message…', 'aria-label': 'Message' });
	const send = el('button', { type: 'submit', class: 'btn btn-primary ' +
	    'chat-send', testid: 'chat-send', 'aria-label': 'Send',
	    title: 'Send (Enter)' }, icon('send'));
	const hint = el('p', { class: 'chat-hint', 'aria-live': 'polite' });
	const composer = el('form', { class: 'chat-composer' }, input, send);
	const memberCount = el('span', { class: 'badge' });
	const memberList = el('ul', { class: 'member-list',
	    testid: 'chat-members', 'aria-label': 'In the room' });
	// A private room's members (SPEC §10), filled in by loadRoom().
	const roomPanel = el('div', { class: 'room-panel', hidden: true,
	    testid: 'room-panel' });
	const view = el('section', { class: 'chat', testid: 'chat-view',
	    data: { roomId } },
	    el('div', { class: 'card chat-main' },
		el('header', { class: 'chat-head' },
		    el('a', { class: 'icon-btn', href: '#/rooms',
			testid: 'chat-back', 'aria-label': 'Back to rooms',
			title: 'Back to rooms' }, icon('back')),
		    el('div', { class: 'chat-head-text' }, title,
			el('span', { class: 'chat-sub' },
			    el('span', { class: 'room-id', text: `#${roomId}` }),
			    status))),
		el('div', { class: 'chat-body' }, scroller, jump),
		typingLine, hint, composer),
	    el('aside', { class: 'card chat-aside' },
		el('h2', {}, 'In the room ', memberCount), memberList,
		roomPanel));
	mount(view);
	app.classList.add('is-chat');

	/* The room: its name, and for a private room its members panel */

	async function loadRoom() {
		let room;
		try {
			room = await api(`/ws/rooms/${enc}`, { signal: ctx.signal });
		} catch (err) {
			if (err.name !== 'AbortError' && !err.handled &&
			    err.status !== 404)
				report(err);
			return;
		}
		if (chat.stopped)
			return;
		title.textContent = room.name;
		setTitle(`${room.dm ? '' : '#'}${room.name} · GoChat`);
		view.dataset.private = String(room.private);
		view.dataset.dm = String(room.dm);
		chat.owner = Number.isSafeInteger(room.owner) ? room.owner : null;
		refreshActions();
		if (room.private)
			await privatePanel(room);
	}

	async function privatePanel(room) {
		const owner = room.owner === state.me.id;
		const list = el('ul', { class: 'member-list',
		    testid: 'room-members' });
		const head = el('h2', { text: room.dm ? 'Conversation' :
		    'Members' });
		const parts = [head, list];
		async function refresh() {
			const users = [];
			for (let before = ''; ;) {
				const page = await api(`/ws/rooms/${enc}/members?` +
				    `limit=200${before}`, { signal: ctx.signal });
				users.push(...page);
				if (page.length < 200)
					break;
				before = `&before=${page[page.length - 1].id}`;
			}
			list.replaceChildren(...users.map((u) => el('li', {
			    class: 'member', testid: 'room-member',
			    data: { userId: u.id } },
			    el('a', { href: userHref(u.id), class: 'member-link' },
				avatar(u.username, 'sm'),
				el('span', { class: 'member-name',
				    text: u.username })),
			    owner && !room.dm && u.id !== state.me.id ?
				el('button', { type: 'button', class: 'icon-btn',
				    testid: 'member-remove', 'aria-label':
				    `Remove ${u.username}`, title: 'Remove',
				    text: '×', onclick: () => removeMember(u) }) :
				null)));
		}
		async function removeMember(u) {
			clearError();
			try {
				await api(`/ws/rooms/${enc}/members/${u.id}`,
				    { method: 'DELETE', signal: ctx.signal });
				await refresh();
			} catch (err) {
				report(err);
			}
		}
		if (owner && !room.dm) {
			const name = el('input', { testid: 'member-add-name',
			    placeholder: 'username', autocomplete: 'off',
			    autocapitalize: 'none', spellcheck: 'false',
			    'aria-label': 'Username to add' });
			const add = el('button', { type: 'submit',
			    class: 'btn btn-small', testid: 'member-add-submit',
			    text: 'Add' });
			const form = el('form', { class: 'member-add' }, name, add);
			form.addEventListener('submit', (e) => {
				e.preventDefault();
				clearError();
				const wanted = name.value.trim();
				if (wanted === '')
					return;
				busy(add, 'Adding…', async () => {
					const u = await api('/users?username=' +
					    encodeURIComponent(wanted),
					    { signal: ctx.signal });
					await api(`/ws/rooms/${enc}/members`,
					    { method: 'POST', body: { userId: u.id },
					    signal: ctx.signal });
					name.value = '';
					await refresh();
				});
			});
			const del = el('button', { type: 'button',
			    class: 'btn btn-danger-ghost btn-small',
			    testid: 'room-delete', text: 'Delete room' });
			del.addEventListener('click', async () => {
				if (!await confirmDialog({ title: 'Delete this room?',
				    text: 'Its messages and members go with it.',
				    yes: 'Delete room' }))
					return;
				busy(del, 'Deleting…', async () => {
					await api(`/ws/rooms/${enc}`,
					    { method: 'DELETE', signal: ctx.signal });
					go('#/rooms');
				});
			});
			parts.push(form, del);
		} else if (!room.dm) {
			const leave = el('button', { type: 'button',
			    class: 'btn btn-danger-ghost btn-small',
			    testid: 'room-leave', text: 'Leave room' });
			leave.addEventListener('click', () => {
				clearError();
				busy(leave, 'Leaving…', async () => {
					await api(`/ws/rooms/${enc}/members/` +
					    state.me.id, { method: 'DELETE',
					    signal: ctx.signal });
					go('#/rooms');
				});
			});
			parts.push(leave);
		}
		roomPanel.replaceChildren(...parts);
		roomPanel.hidden = false;
		try {
			await refresh();
		} catch (err) {
			if (err.name !== 'AbortError' && !err.handled)
				report(err);
		}
	}

	/* Connection */

	function setStatus(kind, text) {
		status.dataset.state = kind;
		statusText.textContent = text;
		for (const entry of chat.outbox)
			showEntry(entry);
	}

	const isOpen = () => chat.ws !== null &&
	    chat.ws.readyState === WebSocket.OPEN;

	async function connect() {
		chat.timer = null;
		if (chat.ws !== null)   // already connected (online came too)
			return;
		if (!navigator.onLine)
			return goOffline();
		setStatus(chat.wasOnline ? 'reconnecting' : 'connecting',
		    chat.wasOnline ? 'Reconnecting…' : 'Connecting…');
		// A 404 before any socket is opened, and who is here, for a
		// start: the list is asked again once the socket's own join has
		// come (see refreshMembers), as joins in between are not seen.
		let clients;
		try {
			clients = await api(`/ws/getClients/${enc}`,
			    { signal: ctx.signal });
		} catch (err) {
			if (err.name === 'AbortError' || err.handled)
				return;
			if (err.status === 404)
				return roomNotFound();
			return retry(err.status === 0 ? 'Cannot reach the server' :
			    err.status === 503 ? 'The server cannot reach its ' +
				'database' : err.message.replace(/\.$/, ''));
		}
		if (chat.stopped || chat.ws !== null)
			return;
		sync.seq++;
		sync.running = null;
		sync.log = null;
		chat.synced = false;
		// Whoever was here and is not now may be reconnecting as I am.
		const before = chat.members;
		setMembers(clients);
		for (const [id, name] of before) {
			if (id !== me && !chat.members.has(id))
				departed(id, name, RECONNECT_GRACE_MS);
		}
		const since = chat.resumable || chat.lastId > 0 ? chat.lastId :
		    null;
		const asked = chat.askV2;
		const ws = new WebSocket(wsUrl(roomId, since),
		    asked ? [PROTOCOL] : []);
		let opened = false;
		chat.ws = ws;
		chat.resuming = since !== null;
		ws.addEventListener('open', () => {
			if (chat.ws !== ws)
				return;
			opened = true;
			if (asked)
				chat.refusals = 0;
			chat.delay = RECONNECT_MIN_MS;
			chat.wasOnline = true;
			const v2 = ws.protocol === PROTOCOL;
			view.dataset.protocol = v2 ? 'v2' : 'v1';
			if (v2 !== chat.v2) {
				chat.v2 = v2;
				refreshActions();
			}
			setStatus('online', 'Online');
			if (!hint.classList.contains('is-error'))
				hint.textContent = '';
			flush();
		});
		ws.addEventListener('message', (e) => {
			if (chat.ws === ws)
				onEvent(e.data);
		});
		ws.addEventListener('close', (e) => {
			if (chat.ws !== ws || chat.stopped)
				return;
			disconnected();
			// A server without gochat.v2 fails the handshake of a
			// browser that asks for it (getClients has just answered,
			// so the server is up): after two such failures in a row,
			// ask no more until this §5 socket closes (the server may
			// be a newer one by then).
			if (!opened && asked) {
				chat.refusals++;
				chat.askV2 = chat.refusals < 2;
				return connect();
			}
			chat.askV2 = true;
			chat.refusals = 0;
			onClose(e.code);
		});
	}

	// The socket is gone: what was sent without an ack goes again on the
	// next one.
	function disconnected() {
		chat.ws = null;
		chat.inFlight = null;
		clearTimeout(chat.retryTimer);
		for (const entry of chat.outbox) {
			if (entry.state === 'sent')
				entry.state = 'queued';
		}
	}

	// The browser says the network is gone: no point in trying until it
	// says it is back (onOnline).
	function goOffline() {
		if (chat.stopped)
			return;
		clearTimeout(chat.timer);
		chat.timer = null;
		const ws = chat.ws;
		if (ws !== null) {
			disconnected();
			ws.close(1000);
		}
		setStatus('offline', 'Offline, waiting for the network');
	}

	async function onClose(code) {
		setStatus('reconnecting', 'Disconnected');
		// A socket also closes when the session ends (logout elsewhere,
		// account deleted): then the login screen, not a retry. api()
		// handles the 401; a failure to reach /me is just retried.
		try {
			await api('/me', { signal: ctx.signal });
		} catch (err) {
			if (err.name === 'AbortError' || err.handled)
				return;
		}
		const reason = CLOSE_REASONS[code];
		// A close caused by a message I sent also goes in the banner.
		// (1011 also closes every socket when Redis goes away, and then
		// it is not about my message.)
		if (code === 1009 || (code === 1011 && !chat.v2 &&
		    Date.now() - chat.sentAt < 5000))
			showError(`${reason}: your last message may not have been ` +
			    'delivered.');
		retry(reason || 'Connection lost');
	}

	// Backoff: 0.5 s doubling to 5 s, back to 0.5 s once a socket opens.
	function retry(reason) {
		if (chat.stopped || chat.ws !== null)
			return;
		if (!navigator.onLine) {
			setStatus('offline', 'Offline, waiting for the network');
			return;
		}
		const wait = chat.delay;
		chat.delay = Math.min(chat.delay * 2, RECONNECT_MAX_MS);
		const secs = Math.round(wait / 100) / 10;
		setStatus('reconnecting', `${reason}. Reconnecting in ${secs} s…`);
		chat.timer = setTimeout(connect, wait);
	}

	// Back online: at once, whatever the backoff had reached.
	function onOnline() {
		if (chat.stopped || chat.ws !== null)
			return;
		clearTimeout(chat.timer);
		chat.delay = RECONNECT_MIN_MS;
		connect();
	}

	function roomNotFound() {
		chat.stopped = true;
		app.classList.remove('is-chat');
		setTitle('Room not found · GoChat');
		view.replaceChildren(emptyState('Room not found',
		    `There is no room “${roomId}”. Check the name, or pick one ` +
			'from the list.',
		    el('a', { class: 'btn btn-primary', href: '#/rooms',
			testid: 'chat-back', text: 'Back to rooms' })));
	}

	window.addEventListener('online', onOnline);
	window.addEventListener('offline', goOffline);
	document.addEventListener('visibilitychange', markSeen);
	window.addEventListener('focus', markSeen);
	ctx.onLeave(() => {
		chat.stopped = true;
		clearTimeout(chat.timer);
		clearTimeout(chat.retryTimer);
		clearTimeout(chat.readTimer);
		for (const t of chat.gone.values())
			clearTimeout(t);
		for (const t of chat.typing.values())
			clearTimeout(t.timer);
		chat.ws?.close(1000);
		window.removeEventListener('online', onOnline);
		window.removeEventListener('offline', goOffline);
		document.removeEventListener('visibilitychange', markSeen);
		window.removeEventListener('focus', markSeen);
		app.classList.remove('is-chat');
		const known = unread.rooms.get(roomId);
		if (known)
			known.count = unread.here;
		unread.roomId = null;
		unread.here = 0;
	});

	/* Events */

	function onEvent(data) {
		let ev;
		try {
			ev = JSON.parse(data);
		} catch {
			return;   // not ours to show
		}
		if (ev === null || typeof ev !== 'object')
			return;
		// Room events come in id order: the newest is where to resume.
		if (['message', 'edit', 'delete'].includes(ev.type) &&
		    Number.isSafeInteger(ev.id) && ev.id > chat.lastId)
			chat.lastId = ev.id;
		const handlers = { message: onMessage, join: onJoinEvent,
		    leave: onLeaveEvent, ack: onAck, error: onError, edit: onEdit,
		    delete: onDelete, typing: onTyping, read: onRead, gap: onGap };
		if (Object.hasOwn(handlers, ev.type))
			handlers[ev.type](ev);
	}

	function onMessage(m) {
		if (!Number.isSafeInteger(m.id) || typeof m.content !== 'string')
			return;
		stopTyping(m.userId);
		if (m.userId === me)
			adopt(m);
		// Missed while away counts as news, the join history does not.
		const fresh = m.userId !== me && (!m.history || chat.resuming);
		live(() => addMessage(m, fresh), m);
	}

	function onJoinEvent(ev) {
		const known = chat.members.has(ev.userId);
		chat.members.set(ev.userId, ev.username);
		sync.log?.push(ev);
		renderMembers();
		// Once per visit for me (a reconnect is not news), and only a
		// person's first connection for others (a second tab is not).
		if (ev.userId === state.me.id) {
			if (!chat.synced) {
				chat.synced = true;
				refreshMembers();
			}
			if (!chat.joined)
				live(() => addNotice('join', 'You joined'));
			chat.joined = true;
			chat.resumable = true;
			chat.resuming = false;
			probeOlder();   // my join follows my history
			markSeen();
		} else if (!known && !returned(ev.userId)) {
			live(() => addNotice('join', `${ev.username} joined`));
		}
	}

	// Someone is not in the room any more: said only if they are not back
	// within grace ms (a reload, a reconnect or a restart is not news).
	function departed(id, name, grace) {
		if (chat.gone.has(id))
			return;
		chat.gone.set(id, setTimeout(() => {
			chat.gone.delete(id);
			if (!chat.stopped && !chat.members.has(id))
				live(() => addNotice('leave', `${name} left`));
		}, grace));
	}

	// True if id had left and is back before anyone was told.
	function returned(id) {
		const timer = chat.gone.get(id);
		if (timer === undefined)
			return false;
		clearTimeout(timer);
		chat.gone.delete(id);
		return true;
	}

	// One person may have several connections: the server's list says
	// whether this leave was their last.
	async function onLeaveEvent(ev) {
		const ok = await refreshMembers();
		if (ok === null || chat.stopped)
			return;
		if (!ok) {
			chat.members.delete(ev.userId);
			renderMembers();
		}
		if (!chat.members.has(ev.userId) && ev.userId !== me) {
			stopTyping(ev.userId);
			departed(ev.userId, ev.username, LEAVE_GRACE_MS);
		}
	}

	// The members, from getClients, asked only once the socket's own join
	// has come, so that every later join and leave reaches the socket.
	// Joins that come while a fetch is in flight may be missing from its
	// answer: they are applied again on top of it. A leave asks again
	// (only the server knows whether it was someone's last connection),
	// and calls made meanwhile share one more fetch. Resolves to true once
	// the list is the server's, false if a fetch failed (the list is then
	// what the events made it), null if this socket was replaced.
	const sync = {
		seq: 0,         // counts sockets: an older socket's fetch is void
		running: null,  // the promise of the fetches in progress
		again: false,   // asked again while a fetch was in flight
		log: null,      // joins seen since the current fetch was sent
	};

	function refreshMembers() {
		sync.again = true;
		if (sync.running === null)
			sync.running = fetchMembers(sync.seq);
		return sync.running;
	}

	async function fetchMembers(seq) {
		let ok = true;
		try {
			while (sync.again) {
				sync.again = false;
				sync.log = [];
				const users = await api(`/ws/getClients/${enc}`,
				    { signal: ctx.signal });
				if (seq !== sync.seq)
					return null;
				const joins = sync.log;
				sync.log = null;
				setMembers(users);
				for (const ev of joins)
					chat.members.set(ev.userId, ev.username);
				renderMembers();
			}
		} catch (err) {
			if (err.name === 'AbortError' || err.handled ||
			    seq !== sync.seq)
				return null;
			ok = false;
		} finally {
			if (seq === sync.seq) {
				sync.running = null;
				sync.log = null;
			}
		}
		return ok;
	}

	function setMembers(users) {
		chat.members = new Map(users.map((u) => [u.id, u.username]));
		renderMembers();
	}

	function renderMembers() {
		const me = state.me.id;
		const sorted = [...chat.members].sort(([a, x], [b, y]) =>
		    (b === me) - (a === me) || x.localeCompare(y));
		memberList.replaceChildren(...sorted.map(([id, name]) =>
		    el('li', { class: 'member', testid: 'chat-member',
			data: { userId: id } },
			el('a', { href: userHref(id), class: 'member-link' },
			    avatar(name, 'sm'),
			    el('span', { class: 'member-name', text: name }),
			    id === me ? el('span', { class: 'badge',
				text: 'you' }) : null))));
		memberCount.textContent = String(chat.members.size);
	}

	/* Messages */

	const atBottom = () => scroller.scrollHeight - scroller.scrollTop -
	    scroller.clientHeight < 48;
	const toBottom = () => { scroller.scrollTop = scroller.scrollHeight; };

	// Adds something live: follows it down if the reader was at the
	// bottom (or sent it), else offers a jump.
	function live(add, msg) {
		const stick = atBottom();
		if (!add())
			return;
		if (stick || (msg && msg.userId === me && !msg.history))
			toBottom();
		else if (msg && !msg.history)
			jump.hidden = false;
		markSeen();
	}

	function messageNode(m) {
		const mine = m.userId === me;
		// userId 0 is an operator's announcement: nobody to link to.
		const who = m.userId > 0 ?
		    el('a', { class: 'msg-user', href: userHref(m.userId),
			testid: 'msg-user', text: m.username }) :
		    el('span', { class: 'msg-user', testid: 'msg-user',
			text: m.username });
		if (mine)
			who.classList.add('visually-hidden');
		const node = el('li', { class: `msg${mine ? ' msg-own' : ''}${
		    m.userId === 0 ? ' msg-ops' : ''}`, testid: 'chat-message',
		    data: { id: m.id, userId: m.userId, ts: m.ts } },
		    mine ? null : avatar(m.username, 'sm'),
		    el('div', { class: 'msg-body' },
			el('div', { class: 'msg-meta' }, who,
			    timeEl(m.ts, 'clock', 'msg-time')),
			el('div', { class: 'msg-content', testid: 'msg-content',
			    title: fmtFull.format(new Date(m.ts)),
			    text: m.content })));
		if (typeof m.edited === 'string')
			markEdited(node, m.edited);
		setActions(node);
		return node;
	}

	// "edited" under the content, its time in the tooltip.
	function markEdited(node, ts) {
		let mark = node.querySelector('.msg-edited');
		if (!mark) {
			mark = el('span', { class: 'msg-edited', testid: 'msg-edited',
			    text: 'edited' });
			node.querySelector('.msg-content').after(mark);
		}
		const date = new Date(ts);
		mark.title = Number.isNaN(date.getTime()) ? 'edited' :
		    `edited ${fmtFull.format(date)}`;
	}

	// Edit (the author) and Delete (the author and the room's owner),
	// with gochat.v2 only.
	function setActions(node) {
		node.querySelector('.msg-actions')?.remove();
		const mine = node.dataset.userId === String(me);
		if (!chat.v2 || !(mine || chat.owner === me))
			return;
		const action = (name, label, onclick) => el('button', {
		    type: 'button', class: 'msg-action', testid: `msg-${name}`,
		    'aria-label': `${label} message`, text: label, onclick });
		node.querySelector('.msg-body').append(el('div', {
		    class: 'msg-actions' },
		    mine ? action('edit', 'Edit', () => startEdit(node)) : null,
		    action('delete', 'Delete', () => confirmDelete(node))));
	}

	function refreshActions() {
		for (const node of chat.nodes.values())
			setActions(node);
	}

	// A message right after one by the same person, within 5 minutes,
	// continues it: style.css then hides its name, time and avatar.
	function group(node) {
		if (node?.dataset.testid !== 'chat-message')
			return;
		const prev = node.previousElementSibling;
		node.classList.toggle('msg-cont',
		    prev?.dataset.testid === 'chat-message' &&
		    prev.dataset.userId === node.dataset.userId &&
		    Date.parse(node.dataset.ts) - Date.parse(prev.dataset.ts) <
		    5 * 60 * 1000);
	}

	// Inserts in id order, once: history comes again after a reconnect.
	// fresh: news to the reader (counted unread until seen).
	function addMessage(m, fresh = false) {
		if (chat.nodes.has(m.id))
			return false;
		let lo = 0, hi = chat.ids.length;
		while (lo < hi) {
			const mid = (lo + hi) >> 1;
			if (chat.ids[mid] < m.id)
				lo = mid + 1;
			else
				hi = mid;
		}
		const node = messageNode(m);
		if (fresh)
			node.dataset.fresh = 'true';
		if (lo === chat.ids.length)
			list.append(node);
		else
			list.insertBefore(node, chat.nodes.get(chat.ids[lo]));
		chat.ids.splice(lo, 0, m.id);
		chat.nodes.set(m.id, node);
		group(node);
		group(node.nextElementSibling);
		empty.hidden = true;
		return true;
	}

	function removeMessage(id) {
		const node = chat.nodes.get(id);
		if (!node)
			return;
		const next = node.nextElementSibling;
		node.remove();
		chat.nodes.delete(id);
		chat.ids.splice(chat.ids.indexOf(id), 1);
		group(next);
		showEmpty();
		countUnread();
	}

	function showEmpty() {
		empty.hidden = list.childElementCount > 0 ||
		    pendingList.childElementCount > 0;
	}

	function addNotice(kind, text) {
		list.append(el('li', { class: 'chat-notice', testid: 'chat-notice',
		    data: { kind } }, el('span', { text })));
		empty.hidden = true;
		return true;
	}

	function noOlder() {
		chat.olderDone = true;
		older.hidden = true;
		start.hidden = chat.ids.length === 0;
	}

	// Once the join history is in: offer older pages only if there are.
	async function probeOlder() {
		if (chat.olderDone)
			return;
		if (chat.ids.length === 0)
			return noOlder();
		let more = true;   // if in doubt: the button reports errors
		try {
			const msgs = await api(`/ws/history/${enc}?before=` +
			    `${chat.ids[0]}&limit=1`, { signal: ctx.signal });
			more = msgs.length > 0;
		} catch {
			// also when the view has gone: nothing is shown then
		}
		if (!more)
			return noOlder();
		const stick = atBottom();
		older.hidden = false;
		if (stick)
			toBottom();
	}

	async function loadOlder() {
		if (chat.ids.length === 0)
			return;
		older.disabled = true;
		try {
			const msgs = await api(`/ws/history/${enc}?before=` +
			    `${chat.ids[0]}&limit=${HISTORY_PAGE}`,
			    { signal: ctx.signal });
			// Keep what the reader was looking at where it was.
			const height = scroller.scrollHeight;
			const top = scroller.scrollTop;
			msgs.forEach(addMessage);
			scroller.scrollTop = top + scroller.scrollHeight - height;
			if (msgs.length < HISTORY_PAGE)
				noOlder();
		} catch (err) {
			report(err);
		} finally {
			older.disabled = false;
		}
	}

	/* Sending */

	function autosize() {
		input.style.height = 'auto';
		input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
	}

	// What is wrong with text as a message's content, or ''.
	function tooLong(text) {
		const bytes = utf8.encode(text).length;
		return bytes > MESSAGE_MAX_BYTES ? `Too long to send: ${bytes} ` +
		    `bytes, the limit is ${MESSAGE_MAX_BYTES}. Shorten it or ` +
		    'split it.' : '';
	}

	function checkLength() {
		const problem = tooLong(input.value);
		hint.classList.toggle('is-error', problem !== '');
		hint.textContent = problem;
		return problem === '';
	}

	function sendMessage() {
		const text = input.value;
		if (text.trim() === '' || !checkLength())
			return;
		queue(newCid(), text, '');
		saveOutbox();
		toBottom();
		input.value = '';
		autosize();
		input.focus();
		flush();
	}

	function queue(cid, content, error) {
		const entry = { cid, content, state: error ? 'failed' : 'queued',
		    adopted: null, error };
		entry.node = pendingNode(entry);
		chat.outbox.push(entry);
		pendingList.append(entry.node);
		showEntry(entry);
		showEmpty();
	}

	// The outbox outlives a reload, or a visit elsewhere, in this tab
	// (sessionStorage): what was written goes out after all, under the
	// same cids, so never twice.
	const outboxKey = `gochat.outbox.${me}.${roomId}`;

	function saveOutbox() {
		try {
			if (chat.outbox.length === 0)
				sessionStorage.removeItem(outboxKey);
			else
				sessionStorage.setItem(outboxKey, JSON.stringify(
				    chat.outbox.map((e) => ({ cid: e.cid,
				    content: e.content, error: e.state === 'failed' ?
				    e.error : '' }))));
		} catch {
			// storage refused: the outbox lasts as long as the view
		}
	}

	function restoreOutbox() {
		let saved;
		try {
			saved = JSON.parse(sessionStorage.getItem(outboxKey));
		} catch {
			return;
		}
		for (const e of Array.isArray(saved) ? saved : []) {
			if (typeof e?.cid === 'string' && typeof e.content === 'string')
				queue(e.cid, e.content, typeof e.error === 'string' ?
				    e.error : '');
		}
	}

	// A message of mine without an ack: "Sending…", "Waiting for the
	// connection…", or why it was refused, with Retry and Discard.
	function pendingNode(entry) {
		const state = el('span', { class: 'msg-state',
		    testid: 'msg-status' });
		const retry = el('button', { type: 'button', class: 'msg-action',
		    testid: 'msg-retry', text: 'Retry', onclick: () => {
			entry.state = 'queued';
			showEntry(entry);
			flush();
		    } });
		const discard = el('button', { type: 'button', class: 'msg-action',
		    testid: 'msg-discard', text: 'Discard', onclick: () => {
			chat.outbox.splice(chat.outbox.indexOf(entry), 1);
			entry.node.remove();
			saveOutbox();
			showEmpty();
		    } });
		entry.parts = { state, retry, discard };
		return el('li', { class: 'msg msg-own msg-pending',
		    testid: 'chat-message', data: { cid: entry.cid,
		    userId: me } },
		    el('div', { class: 'msg-body' },
			el('div', { class: 'msg-content', testid: 'msg-content',
			    text: entry.content }),
			el('div', { class: 'msg-meta' }, state, retry, discard)));
	}

	function showEntry(entry) {
		const failed = entry.state === 'failed';
		entry.node.dataset.state = failed ? 'failed' : 'pending';
		entry.parts.state.textContent = failed ?
		    `Not sent: ${entry.error}` : isOpen() ? 'Sending…' :
		    'Waiting for the connection…';
		entry.parts.retry.hidden = !failed;
		entry.parts.discard.hidden = !failed;
	}

	// Sends the first message waiting, unless one is already on its way.
	function flush() {
		if (chat.inFlight !== null || !isOpen())
			return;
		if (!chat.v2) {
			// §5: no acks, so no resends either; the echo shows it.
			for (const entry of chat.outbox.splice(0)) {
				chat.ws.send(entry.content);
				entry.node.remove();
			}
			saveOutbox();
			chat.sentAt = Date.now();
			showEmpty();
			return;
		}
		const entry = chat.outbox.find((e) => e.state === 'queued');
		if (!entry)
			return;
		clearTimeout(chat.retryTimer);
		chat.inFlight = entry;
		entry.state = 'sent';
		showEntry(entry);
		chat.ws.send(JSON.stringify({ op: 'send', cid: entry.cid,
		    content: entry.content }));
		chat.sentAt = Date.now();
	}

	// My message came before its ack (or in the replay of a resume, its
	// ack lost with the old socket): the pending copy goes.
	function adopt(m) {
		const entry = chat.inFlight;
		if (entry === null || entry.adopted !== null ||
		    entry.content !== m.content)
			return;
		entry.adopted = m.id;
		entry.node.remove();
	}

	function onAck(ev) {
		const i = chat.outbox.findIndex((e) => e.cid === ev.cid);
		if (i === -1)
			return;
		const [entry] = chat.outbox.splice(i, 1);
		entry.node.remove();
		saveOutbox();
		if (entry.adopted === null && Number.isSafeInteger(ev.id))
			live(() => addMessage({ id: ev.id, userId: me,
			    username: state.me.username, content: entry.content,
			    ts: ev.ts }), { userId: me });
		if (chat.inFlight === entry)
			chat.inFlight = null;
		showEmpty();
		flush();
	}

	function onError(ev) {
		const why = typeof ev.error === 'string' && ev.error !== '' ?
		    ev.error : ERROR_CODES[ev.code] || 'Refused by the server';
		if (ev.op === 'send') {
			const entry = chat.outbox.find((e) => e.cid === ev.cid) ??
			    chat.inFlight;
			if (!entry)
				return;
			if (chat.inFlight === entry)
				chat.inFlight = null;
			if (entry.adopted !== null) {
				entry.adopted = null;
				pendingList.append(entry.node);
			}
			if (ev.code === 'rate_limited' || ev.code === 'unavailable') {
				// Sent again by itself, first in line as before.
				entry.state = 'queued';
				showEntry(entry);
				clearTimeout(chat.retryTimer);
				chat.retryTimer = setTimeout(flush,
				    Number.isSafeInteger(ev.retryAfterMs) ?
				    Math.max(100, ev.retryAfterMs) : 2000);
				return;
			}
			entry.state = 'failed';
			entry.error = why;
			showEntry(entry);
			saveOutbox();
			flush();
		} else if (ev.op === 'edit') {
			const edit = chat.edits.shift();
			if (edit) {
				edit.node.querySelector('.msg-content').textContent =
				    edit.old;
				saving(edit.node);
			}
			showError(`Your edit was not saved: ${why}`);
		} else if (ev.op === 'delete') {
			const id = chat.deletes.shift();
			const node = chat.nodes.get(id);
			if (node)
				delete node.dataset.state;
			showError(`The message was not deleted: ${why}`);
		}
		// typing and read: nothing a person needs to know.
	}

	/* Editing and deleting (gochat.v2) */

	// The state of a message with edits on their way: saving, or not.
	function saving(node) {
		const id = Number(node.dataset.id);
		if (chat.edits.some((e) => e.id === id))
			node.dataset.state = 'saving';
		else
			delete node.dataset.state;
	}

	function startEdit(node) {
		if (node.querySelector('.msg-editor'))
			return;
		const content = node.querySelector('.msg-content');
		const box = el('textarea', { class: 'msg-edit-input',
		    testid: 'msg-edit-input', 'aria-label': 'Edit message',
		    rows: 2, value: content.textContent });
		const cancel = el('button', { type: 'button', class: 'btn btn-small',
		    testid: 'msg-edit-cancel', text: 'Cancel' });
		const save = el('button', { type: 'submit',
		    class: 'btn btn-primary btn-small', testid: 'msg-edit-save',
		    text: 'Save' });
		const form = el('form', { class: 'msg-editor' }, box,
		    el('div', { class: 'msg-editor-actions' }, cancel, save));
		const close = () => {
			form.remove();
			content.hidden = false;
		};
		cancel.addEventListener('click', close);
		box.addEventListener('keydown', (e) => {
			if (e.key === 'Escape') {
				e.preventDefault();
				close();
			} else if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
				e.preventDefault();
				form.requestSubmit();
			}
		});
		form.addEventListener('submit', (e) => {
			e.preventDefault();
			const text = box.value;
			if (text === content.textContent)
				return close();
			const problem = text.trim() === '' ? 'A message cannot be ' +
			    'empty: delete it instead.' : tooLong(text);
			if (problem !== '')
				return showError(problem);
			if (!isOpen())
				return showError('Not connected: save again once the ' +
				    'room is back online.');
			const id = Number(node.dataset.id);
			chat.ws.send(JSON.stringify({ op: 'edit', id,
			    content: text }));
			chat.edits.push({ id, node, old: content.textContent });
			content.textContent = text;
			saving(node);
			close();
		});
		content.hidden = true;
		content.after(form);
		box.focus();
		box.setSelectionRange(box.value.length, box.value.length);
	}

	async function confirmDelete(node) {
		const mine = node.dataset.userId === String(me);
		if (!await confirmDialog({ title: 'Delete this message?',
		    text: mine ? 'It disappears for everyone in the room.' :
			'It disappears for everyone in the room, its author ' +
			'included.',
		    yes: 'Delete' }))
			return;
		if (!isOpen())
			return showError('Not connected: delete it once the room is ' +
			    'back online.');
		const id = Number(node.dataset.id);
		chat.ws.send(JSON.stringify({ op: 'delete', id }));
		chat.deletes.push(id);
		node.dataset.state = 'deleting';
	}

	function onEdit(ev) {
		const i = chat.edits.findIndex((e) => e.id === ev.target);
		if (i !== -1)
			chat.edits.splice(i, 1);
		const node = chat.nodes.get(ev.target);
		if (!node || typeof ev.content !== 'string')
			return;
		node.querySelector('.msg-content').textContent = ev.content;
		markEdited(node, ev.ts);
		saving(node);
	}

	// Deleted messages disappear (as they do from the history).
	function onDelete(ev) {
		const i = chat.deletes.indexOf(ev.target);
		if (i !== -1)
			chat.deletes.splice(i, 1);
		removeMessage(ev.target);
	}

	/* Typing */

	function sendTyping() {
		const now = Date.now();
		if (!chat.v2 || !isOpen() || now - chat.typingSentAt <
		    TYPING_EVERY_MS)
			return;
		chat.typingSentAt = now;
		chat.ws.send(JSON.stringify({ op: 'typing' }));
	}

	function onTyping(ev) {
		if (ev.userId === me || typeof ev.username !== 'string')
			return;
		clearTimeout(chat.typing.get(ev.userId)?.timer);
		chat.typing.set(ev.userId, { username: ev.username,
		    timer: setTimeout(() => stopTyping(ev.userId),
		    TYPING_SHOW_MS) });
		renderTyping();
	}

	function stopTyping(id) {
		const t = chat.typing.get(id);
		if (!t)
			return;
		clearTimeout(t.timer);
		chat.typing.delete(id);
		renderTyping();
	}

	function renderTyping() {
		const names = [...chat.typing.values()].map((t) => t.username);
		typingLine.textContent = names.length === 1 ?
		    `${names[0]} is typing…` : names.length === 2 ?
		    `${names[0]} and ${names[1]} are typing…` :
		    `${names.length} people are typing…`;
		typingLine.hidden = names.length === 0;
	}

	/* Read markers and the unread count */

	// The newest message the reader can see: the last one when the list
	// is scrolled to the bottom of a visible page, else the last one on
	// screen; 0 for none.
	function seenUpTo() {
		if (document.visibilityState !== 'visible' || chat.ids.length === 0)
			return 0;
		if (atBottom())
			return chat.ids[chat.ids.length - 1];
		const bottom = scroller.getBoundingClientRect().bottom;
		for (let i = chat.ids.length - 1; i >= 0; i--) {
			const box = chat.nodes.get(chat.ids[i]).getBoundingClientRect();
			if (box.bottom <= bottom + 1)
				return chat.ids[i];
		}
		return 0;
	}

	function markSeen() {
		if (chat.stopped)
			return;
		chat.seenId = Math.max(chat.seenId, seenUpTo());
		countUnread();
		sendRead();
	}

	function countUnread() {
		let n = 0;
		for (let i = chat.ids.length - 1; i >= 0 &&
		    chat.ids[i] > chat.seenId; i--) {
			if (chat.nodes.get(chat.ids[i]).dataset.fresh === 'true')
				n++;
		}
		unread.here = n;
		showUnread();
	}

	// The read marker follows what was seen, at most every READ_DELAY_MS.
	function sendRead() {
		if (chat.readTimer !== null || chat.seenId <= chat.readSent)
			return;
		chat.readTimer = setTimeout(() => {
			chat.readTimer = null;
			if (chat.stopped || !chat.v2 || !isOpen() ||
			    chat.seenId <= chat.readSent)
				return;
			chat.readSent = chat.seenId;
			chat.ws.send(JSON.stringify({ op: 'read',
			    id: chat.readSent }));
		}, READ_DELAY_MS);
	}

	// Read on another tab or device of mine.
	function onRead(ev) {
		if (!Number.isSafeInteger(ev.id))
			return;
		chat.readSent = Math.max(chat.readSent, ev.id);
		chat.seenId = Math.max(chat.seenId, ev.id);
		countUnread();
	}

	/* More missed than the server replays (gap) */

	function onGap(ev) {
		if (!Number.isSafeInteger(ev.after) || !Number.isSafeInteger(
		    ev.before))
			return;
		const gap = { after: ev.after, before: ev.before };
		const load = el('button', { type: 'button',
		    class: 'btn btn-ghost btn-small', testid: 'chat-gap-load',
		    text: 'Show them' });
		gap.node = el('li', { class: 'chat-gap', testid: 'chat-gap' },
		    el('span', { text: 'Older messages are not shown here.' }),
		    load);
		// The replay follows, after the marker.
		list.append(gap.node);
		showEmpty();
		load.addEventListener('click', () => loadGap(gap, load));
	}

	// A page of the missing messages, newest first, until none is left.
	async function loadGap(gap, button) {
		button.disabled = true;
		try {
			const msgs = await api(`/ws/history/${enc}?before=` +
			    `${gap.before}&limit=${HISTORY_PAGE}`,
			    { signal: ctx.signal });
			const missing = msgs.filter((m) => m.id > gap.after);
			for (const m of missing)
				addMessage(m);
			if (missing.length < HISTORY_PAGE)
				gap.node.remove();
			else
				gap.before = missing[0].id;
		} catch (err) {
			report(err);
		} finally {
			button.disabled = false;
		}
	}

	input.addEventListener('input', () => {
		autosize();
		checkLength();
		if (input.value.trim() !== '')
			sendTyping();
	});
	input.addEventListener('keydown', (e) => {
		if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
			e.preventDefault();
			sendMessage();
		}
	});
	composer.addEventListener('submit', (e) => {
		e.preventDefault();
		sendMessage();
	});
	older.addEventListener('click', loadOlder);
	jump.addEventListener('click', () => {
		toBottom();
		jump.hidden = true;
	});
	scroller.addEventListener('scroll', () => {
		if (atBottom())
			jump.hidden = true;
		markSeen();
	});

	// The room's name (cosmetic: the id stays shown if this fails) and
	// a private room's members panel.
	loadRoom();
	restoreOutbox();
	connect();
	// Not on touch screens: the keyboard would cover the history.
	if (matchMedia('(pointer: fine)').matches)
		input.focus();
}

/* --- Start-up ----------------------------------------------------------- */

// Until /me has answered, a change of address only waits: rendering then
// would take a logged-in person to the login screen, and from there to
// the feed instead of where they were going.
let booting = true;

async function start() {
	booting = true;
	mount(el('p', { class: 'boot', text: 'Loading GoChat…' }));
	try {
		const me = await api('/me');
		state.me = me;
		renderTopbar();
	} catch (err) {
		if (err.status !== 401) {
			mount(el('section', { class: 'view view-narrow' },
			    emptyState('GoChat cannot start', err.message,
				el('button', { type: 'button', class: 'btn btn-primary',
				    text: 'Try again', onclick: start }))));
			return;
		}
	}
	booting = false;
	render();
	pollUnread();
}

app.append(banner);
main.before(netBanner);
window.addEventListener('hashchange', () => {
	if (!booting)
		render();
});
window.addEventListener('offline', showNetwork);
window.addEventListener('online', showNetwork);
showNetwork();
setInterval(refreshTimes, 30000);
setInterval(pollUnread, UNREAD_REFRESH_MS);
start();
