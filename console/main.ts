// The essh web console: a read-only view of the sessions a user may see, their Operation records and
// lifecycle, and their recordings played with asciinema-player. It only calls the REST API, with the
// user's own API token, so it can show exactly what the API lets that user see. The token is kept in
// sessionStorage (this tab, until it closes), never in localStorage or a cookie.
import * as AsciinemaPlayer from 'asciinema-player';
import 'asciinema-player/dist/bundle/asciinema-player.css';
import './style.css';
import { printable } from '../lib/printable.js';
import { SESSION_STATES } from '../shapes/enumerations.js';
// Types only: zod stays out of the page's script.
import type { Operation, Session, User } from '../shapes/answers.js';

// --- the API ------------------------------------------------------------------------------------

const TOKEN_KEY = 'essh.token';
const token = () => sessionStorage.getItem(TOKEN_KEY);

interface Answer<T = any> {
  status: number;
  body: T;
  text: string;
}

class SignedOut extends Error {}

/** GET an API path with the user's token; a 401 signs the user out. */
async function api<T = any>(path: string, tokenOverride?: string): Promise<Answer<T>> {
  const t = tokenOverride ?? token();
  if (!t) throw new SignedOut();
  const res = await fetch(path, { headers: { authorization: `Bearer ${t}` }, credentials: 'omit', cache: 'no-store' });
  const text = await res.text();
  let body: any;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  if (res.status === 401 && tokenOverride === undefined) {
    signOut('Your token is no longer valid (revoked, or unknown here); sign in again.');
    throw new SignedOut();
  }
  return { status: res.status, body, text };
}

/** Every item of a list (the API answers lists a page at a time). */
async function listAll<T>(path: string): Promise<T[]> {
  const items: T[] = [];
  const sep = path.includes('?') ? '&' : '?';
  for (let cursor: string | null = null; ;) {
    const r: Answer<{ items: T[]; next_cursor: string | null }> = await api(`${path}${sep}limit=500${cursor ? `&cursor=${cursor}` : ''}`);
    if (r.status !== 200) throw new Error(messageOf(r));
    items.push(...r.body.items);
    if (!r.body.next_cursor) return items;
    cursor = r.body.next_cursor;
  }
}

const messageOf = (r: Answer) => (typeof r.body?.message === 'string' ? r.body.message : `The API answered ${r.status}.`);

// --- DOM helpers (text only: nothing from the API is ever parsed as HTML, and its control characters
// are shown escaped, lib/printable.ts) ------------------------------------------------------------------

type Child = Node | string | number | null | undefined | false;
function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string | boolean | undefined> = {}, ...children: Child[]) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(typeof c === 'string' ? printable(c) : typeof c === 'number' ? String(c) : c);
  return el;
}
const main = () => document.getElementById('main')!;
function show(...nodes: Node[]) {
  main().replaceChildren(...nodes);
}
function alertBox(text: string, kind: 'error' | 'not-found' | 'info' = 'error') {
  return h('p', { class: `alert ${kind}`, role: 'alert' }, text);
}
const time = (iso: string | null) => (iso ? h('time', { datetime: iso, title: iso }, new Date(iso).toLocaleString()) : '—');

// --- sign in / out ------------------------------------------------------------------------------

let me: User | undefined;

/** Said once on the sign-in form (why the user was signed out). */
let signInMessage: string | undefined;

function signOut(message?: string) {
  sessionStorage.removeItem(TOKEN_KEY);
  me = undefined;
  renderWho();
  signInMessage = message;
  if (location.hash === '#/sign-in') signInView();
  else location.hash = '#/sign-in';
}

function renderWho() {
  const who = document.getElementById('who')!;
  if (!me) return void who.replaceChildren();
  const out = h('button', { type: 'button', class: 'link', id: 'sign-out' }, 'Sign out');
  out.addEventListener('click', () => signOut());
  who.replaceChildren(h('span', {}, `${me.name} <${me.email}> · ${me.role}`), ' ', out);
}

function signInView() {
  const message = signInMessage;
  signInMessage = undefined;
  const input = h('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'off', required: true, placeholder: 'essh_…', spellcheck: 'false' });
  const problem = h('div', { id: 'sign-in-problem' }, message ? alertBox(message) : null);
  const form = h('form', { id: 'sign-in', class: 'card' },
    h('h1', {}, 'Sign in'),
    h('p', {}, 'With an API token (essh login, or POST /users/{id}/tokens). It is kept in this tab only, until you close it or sign out.'),
    h('label', { for: 'token' }, 'API token'), input,
    h('button', { type: 'submit' }, 'Sign in'),
    problem,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const t = input.value.trim();
    const r = await api<User>('/me', t);
    if (r.status !== 200) return void problem.replaceChildren(alertBox(messageOf(r)));
    sessionStorage.setItem(TOKEN_KEY, t);
    me = r.body;
    renderWho();
    location.hash = '#/sessions';
  });
  show(form);
  input.focus();
}

// --- the sessions list ------------------------------------------------------------------------------

async function sessionsView(params: URLSearchParams) {
  const filters = { app: params.get('app') ?? '', state: params.get('state') ?? '', user: params.get('user') ?? '' };
  const [apps, users] = await Promise.all([
    listAll<{ handle: string }>('/apps').catch(() => []),
    listAll<{ id: number; name: string; email: string }>('/users').catch(() => []),
  ]);
  const select = (name: string, label: string, options: [string, string][]) => {
    const s = h('select', { name, id: `filter-${name}` }, h('option', { value: '' }, `any ${label}`),
      ...options.map(([value, text]) => h('option', { value, selected: value === filters[name as keyof typeof filters] }, text)));
    return h('label', {}, `${label} `, s);
  };
  const form = h('form', { id: 'filters', class: 'filters' },
    select('app', 'app', apps.map((a) => [a.handle, a.handle])),
    select('state', 'state', SESSION_STATES.map((s) => [s, s])),
    // A member sees only its own sessions: a user filter would have one choice.
    users.length > 1 ? select('user', 'user', users.map((u) => [String(u.id), `${u.name} <${u.email}>`])) : null,
    h('button', { type: 'submit' }, 'Filter'),
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) q.set(k, String(v));
    location.hash = `#/sessions${q.size ? `?${q}` : ''}`;
  });

  const rows = h('tbody');
  const table = h('table', { id: 'sessions' },
    h('thead', {}, h('tr', {}, ...['Session', 'App', 'User', 'State', 'Created', 'Ended', 'End reason', 'Exit code'].map((t) => h('th', { scope: 'col' }, t)))),
    rows);
  const more = h('button', { type: 'button', id: 'more', hidden: true }, 'More');
  const status = h('div', { id: 'list-status' });
  show(h('h1', {}, 'Sessions'), form, status, table, more);

  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(filters)) if (v) query.set(k, v);
  let cursor: string | null = null;
  const load = async () => {
    const q = new URLSearchParams(query);
    q.set('limit', '50');
    if (cursor) q.set('cursor', cursor);
    const r = await api<{ items: Session[]; next_cursor: string | null }>(`/sessions?${q}`);
    if (r.status !== 200) return void status.replaceChildren(alertBox(messageOf(r)));
    for (const s of r.body.items) {
      rows.append(h('tr', { 'data-session': String(s.id) },
        h('td', {}, h('a', { href: `#/sessions/${s.id}` }, String(s.id))),
        h('td', {}, s.app), h('td', {}, s.user.email), h('td', {}, h('span', { class: `state ${s.state}` }, s.state)),
        h('td', {}, time(s.created_at)), h('td', {}, time(s.ended_at)), h('td', {}, s.end_reason ?? ''),
        h('td', {}, s.exit_code === null ? '' : String(s.exit_code))));
    }
    if (!rows.childElementCount) status.replaceChildren(alertBox('No sessions to show.', 'info'));
    cursor = r.body.next_cursor;
    more.hidden = !cursor;
  };
  more.addEventListener('click', () => void load());
  await load();
}

// --- one session ------------------------------------------------------------------------------

function fields(rows: [string, Child][]) {
  return h('dl', { class: 'fields' }, ...rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '—')]));
}

function lifecycle(s: Session) {
  const step = (what: string, at: string | null, detail?: Child) =>
    h('li', { class: at ? 'done' : 'pending' }, h('strong', {}, what), ' ', time(at), detail ? h('div', { class: 'detail' }, detail) : null);
  const ended = [
    s.end_reason && `reason: ${s.end_reason}`,
    s.end_message && `“${s.end_message}”`,
    s.ended_by && `ended by ${s.ended_by}`,
    s.exit_code !== null && `exit code ${s.exit_code}`,
  ].filter(Boolean).join(' · ');
  return h('ol', { class: 'lifecycle', id: 'lifecycle' },
    step('Created', s.created_at, `by ${s.user.name} <${s.user.email}>; ${s.command ? `command: ${s.command.join(' ')}` : "the app's shell"}`),
    step('Client connected', s.connected_at),
    step(s.state === 'ended' ? 'Ended' : `Now ${s.state}`, s.ended_at, ended || null),
    s.state !== 'ended' ? step('Expires', s.expires_at) : null,
  );
}

async function sessionView(id: string) {
  show(h('p', {}, `Loading session ${id}…`));
  const [session, operation] = await Promise.all([api<Session>(`/sessions/${id}`), api<Operation>(`/operations/${id}`)]);
  if (session.status !== 200) {
    return show(h('h1', {}, `Session ${id}`), alertBox(messageOf(session), session.status === 404 ? 'not-found' : 'error'),
      h('p', {}, h('a', { href: '#/sessions' }, '← All sessions')));
  }
  const s = session.body;
  const player = h('div', { id: 'player', class: 'player' }, h('p', {}, 'Loading the recording…'));
  show(
    h('p', {}, h('a', { href: '#/sessions' }, '← All sessions')),
    h('h1', {}, `Session ${s.id} `, h('span', { class: `state ${s.state}` }, s.state)),
    h('section', {}, h('h2', {}, 'Lifecycle'), lifecycle(s)),
    h('section', {}, h('h2', {}, 'Recording'), player),
    h('section', {}, h('h2', {}, 'Session'), fields([
      ['App', s.app], ['Account', s.account], ['Stack', s.stack], ['User', `${s.user.name} <${s.user.email}>`],
      ['State', s.state], ['End reason', s.end_reason], ['End message', s.end_message], ['Ended by', s.ended_by],
      ['Exit code', s.exit_code === null ? null : String(s.exit_code)], ['Command', s.command ? s.command.join(' ') : "the app's shell"],
      ['Container size', `${s.container_size_mb} MB`], ['Container', s.container_id], ['Workflow', s.workflow_id],
      ['Created', time(s.created_at)], ['Connected', time(s.connected_at)], ['Ended', time(s.ended_at)], ['Expires', time(s.expires_at)],
    ])),
    h('section', { id: 'operation' }, h('h2', {}, 'Operation record'), operation.status === 200 ? fields([
      ['Operation', String(operation.body.id)], ['Type', operation.body.type], ['Status', operation.body.status],
      ['App', operation.body.app], ['User', `${operation.body.user_name} <${operation.body.user_email}>`],
      ['Command', operation.body.command ? operation.body.command.join(' ') : "the app's shell"],
      ['Container size', `${operation.body.container_size_mb} MB`], ['End reason', operation.body.end_reason],
      ['Exit code', operation.body.exit_code === null ? null : String(operation.body.exit_code)],
      ['Created', time(operation.body.created_at)], ['Updated', time(operation.body.updated_at)],
    ]) : alertBox(messageOf(operation))),
  );
  await showRecording(s, player);
}

async function showRecording(s: Session, into: HTMLElement) {
  const r = await api(`/sessions/${s.id}/recording`);
  if (r.status !== 200) return void into.replaceChildren(alertBox(messageOf(r), 'info'));
  const lines = r.text.trimEnd().split('\n');
  let end = 0;
  try {
    const last = JSON.parse(lines[lines.length - 1]!);
    if (Array.isArray(last) && typeof last[0] === 'number') end = last[0];
  } catch {
    // a header only
  }
  const download = h('a', { href: URL.createObjectURL(new Blob([r.text], { type: 'application/x-asciicast' })), download: `essh-session-${s.id}.cast` },
    'Download the .cast file');
  const el = h('div', { class: 'player-frame' });
  into.replaceChildren(el, h('p', {}, download, ` · ${lines.length - 1} output events, ${end.toFixed(1)} s`));
  // The poster is the screen after the last event (the player shows the events before the poster's
  // time): what the session ended on, at once. Play replays it from the start.
  AsciinemaPlayer.create({ data: r.text }, el, { poster: `npt:${end + 1}`, fit: 'width', preload: true, controls: true, terminalFontSize: 'small' });
}

// --- routing ------------------------------------------------------------------------------------

async function route() {
  const hash = location.hash.replace(/^#/, '') || '/';
  const [path = '/', query = ''] = hash.split('?');
  if (path === '/sign-in') return signInView();
  if (!token()) return void (location.hash = '#/sign-in');
  try {
    if (!me) {
      const r = await api<User>('/me');
      me = r.body;
      renderWho();
    }
    const one = /^\/sessions\/(\d+)$/.exec(path);
    if (one) return await sessionView(one[1]!);
    if (path === '/sessions') return await sessionsView(new URLSearchParams(query));
    location.hash = '#/sessions';
  } catch (err) {
    if (err instanceof SignedOut) return;
    show(alertBox(`Something went wrong: ${(err as Error).message}`));
  }
}

window.addEventListener('hashchange', () => void route());
void route();
