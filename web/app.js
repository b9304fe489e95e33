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
const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 10000;

// What the server means by the close codes a client can act on (SPEC §5).
const CLOSE_REASONS = {
	1001: 'The server is restarting',
	1008: 'You were too slow to read',
	1009: 'Message too long',
	1011: 'The server could not accept the message',
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
	document.title = 'Not found · GoChat';
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
	document.title = `${register ? 'Create an account' : 'Log in'} · GoChat`;
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
}

function loggedOut(notice) {
	state.me = null;
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
	const navLink = (name, href, label) => el('a', { class: 'nav-link',
	    href, testid: `nav-${name}`, data: { nav: name }, title: label },
	    icon(name === 'profile' ? 'user' : name),
	    el('span', { class: 'nav-label', text: label }));
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
		    navLink('rooms', '#/rooms', 'Rooms'),
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
	document.title = 'Feed · GoChat';
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
	document.title = 'Profile · GoChat';
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
	document.title = `${user.username} · GoChat`;

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
	document.title = 'Rooms · GoChat';
	const list = el('ul', { class: 'room-list', testid: 'room-list' });
	// Direct rooms apart (SPEC §10: named after the other user).
	const dmList = el('ul', { class: 'room-list', testid: 'dm-list' });
	const dmEmpty = el('p', { class: 'empty', text: 'No conversations ' +
	    'yet. Open a profile and press Message.' });
	const empty = el('p', { class: 'empty', hidden: true,
	    text: 'No rooms yet. Create the first one.' });
	const items = new Map();   // room id → {node, name, clients, count}

	function roomItem(room) {
		const name = el('a', { class: 'room-name', href: roomHref(room.id),
		    testid: 'room-name' });
		const clients = el('span', { testid: 'room-clients' });
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
		    count,
		    el('a', { class: 'btn btn-primary btn-small',
			href: roomHref(room.id), testid: 'room-join',
			text: 'Join' }));
		return { node, name, clients, count };
	}

	// Updates in place, so a refresh never moves focus or flickers.
	async function refresh() {
		const rooms = await allRooms(ctx.signal);
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

function wsUrl(roomId) {
	return (location.protocol === 'https:' ? 'wss://' : 'ws://') +
	    location.host + '/ws/joinRoom/' + encodeURIComponent(roomId);
}

function chatView(ctx, roomId) {
	document.title = `#${roomId} · GoChat`;
	const enc = encodeURIComponent(roomId);
	const chat = {
		ws: null,
		delay: RECONNECT_MIN_MS,
		timer: null,
		stopped: false,
		wasOnline: false,        // a socket opened once: now "reconnecting"
		joined: false,           // my first join notice was shown
		synced: false,           // this socket's own join came: list asked
		members: new Map(),      // user id → username
		ids: [],                 // message ids shown, ascending
		nodes: new Map(),        // message id → element
		olderDone: false,        // no older history left
		sentAt: 0,               // when I last sent a message
	};

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
	const scroller = el('div', { class: 'chat-scroll' }, older, start, list,
	    empty);
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
		hint, composer),
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
		document.title = `${room.dm ? '' : '#'}${room.name} · GoChat`;
		view.dataset.private = String(room.private);
		view.dataset.dm = String(room.dm);
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
		send.disabled = kind !== 'online';
	}

	async function connect() {
		chat.timer = null;
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
		sync.seq++;
		sync.running = null;
		sync.log = null;
		chat.synced = false;
		setMembers(clients);
		const ws = new WebSocket(wsUrl(roomId));
		chat.ws = ws;
		ws.addEventListener('open', () => {
			chat.delay = RECONNECT_MIN_MS;
			chat.wasOnline = true;
			setStatus('online', 'Online');
			if (!hint.classList.contains('is-error'))
				hint.textContent = '';
		});
		ws.addEventListener('message', (e) => onEvent(e.data));
		ws.addEventListener('close', (e) => {
			if (chat.ws !== ws || chat.stopped)
				return;
			chat.ws = null;
			onClose(e.code);
		});
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
		if (code === 1009 || (code === 1011 &&
		    Date.now() - chat.sentAt < 5000))
			showError(`${reason}: your last message may not have been ` +
			    'delivered.');
		retry(reason || 'Connection lost');
	}

	// Backoff: 0.5 s doubling to 10 s, back to 0.5 s once a socket opens.
	function retry(reason) {
		if (chat.stopped)
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

	function onOnline() {
		if (status.dataset.state === 'offline' && chat.ws === null &&
		    chat.timer === null)
			connect();
	}

	function roomNotFound() {
		chat.stopped = true;
		app.classList.remove('is-chat');
		document.title = 'Room not found · GoChat';
		view.replaceChildren(emptyState('Room not found',
		    `There is no room “${roomId}”. Check the name, or pick one ` +
			'from the list.',
		    el('a', { class: 'btn btn-primary', href: '#/rooms',
			testid: 'chat-back', text: 'Back to rooms' })));
	}

	window.addEventListener('online', onOnline);
	ctx.onLeave(() => {
		chat.stopped = true;
		clearTimeout(chat.timer);
		chat.ws?.close(1000);
		window.removeEventListener('online', onOnline);
		app.classList.remove('is-chat');
	});

	/* Events */

	function onEvent(data) {
		let ev;
		try {
			ev = JSON.parse(data);
		} catch {
			return;   // not ours to show
		}
		if (ev.type === 'message')
			live(() => addMessage(ev), ev);
		else if (ev.type === 'join')
			onJoinEvent(ev);
		else if (ev.type === 'leave')
			onLeaveEvent(ev);
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
			probeOlder();   // my join follows my history
		} else if (!known) {
			live(() => addNotice('join', `${ev.username} joined`));
		}
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
		if (!chat.members.has(ev.userId))
			live(() => addNotice('leave', `${ev.username} left`));
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
		if (stick || (msg && msg.userId === state.me.id && !msg.history))
			toBottom();
		else if (msg && !msg.history)
			jump.hidden = false;
	}

	function messageNode(m) {
		const mine = m.userId === state.me.id;
		// userId 0 is an operator's announcement: nobody to link to.
		const who = m.userId > 0 ?
		    el('a', { class: 'msg-user', href: userHref(m.userId),
			testid: 'msg-user', text: m.username }) :
		    el('span', { class: 'msg-user', testid: 'msg-user',
			text: m.username });
		if (mine)
			who.classList.add('visually-hidden');
		return el('li', { class: `msg${mine ? ' msg-own' : ''}${
		    m.userId === 0 ? ' msg-ops' : ''}`, testid: 'chat-message',
		    data: { id: m.id, userId: m.userId, ts: m.ts } },
		    mine ? null : avatar(m.username, 'sm'),
		    el('div', { class: 'msg-body' },
			el('div', { class: 'msg-meta' }, who,
			    timeEl(m.ts, 'clock', 'msg-time')),
			el('div', { class: 'msg-content', testid: 'msg-content',
			    title: fmtFull.format(new Date(m.ts)),
			    text: m.content })));
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
	function addMessage(m) {
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

	function checkLength() {
		const bytes = utf8.encode(input.value).length;
		const over = bytes > MESSAGE_MAX_BYTES;
		hint.classList.toggle('is-error', over);
		hint.textContent = over ? `Too long to send: ${bytes} bytes, the ` +
		    `limit is ${MESSAGE_MAX_BYTES}. Shorten it or split it.` : '';
		return !over;
	}

	function sendMessage() {
		const text = input.value;
		if (text.trim() === '' || !checkLength())
			return;
		if (chat.ws === null || chat.ws.readyState !== WebSocket.OPEN) {
			hint.classList.remove('is-error');
			hint.textContent = 'Not connected: your message is kept, ' +
			    'send it once the room is back online.';
			return;
		}
		chat.ws.send(text);
		chat.sentAt = Date.now();
		input.value = '';
		autosize();
		input.focus();
	}

	input.addEventListener('input', () => {
		autosize();
		checkLength();
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
	});

	// The room's name (cosmetic: the id stays shown if this fails) and
	// a private room's members panel.
	loadRoom();
	connect();
	// Not on touch screens: the keyboard would cover the history.
	if (matchMedia('(pointer: fine)').matches)
		input.focus();
}

/* --- Start-up ----------------------------------------------------------- */

async function start() {
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
	render();
}

app.append(banner);
window.addEventListener('hashchange', render);
setInterval(refreshTimes, 30000);
start();
