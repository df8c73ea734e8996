// The essh web console: the sessions a user may see, kept up to date while the tab is visible, their
// Operation records and lifecycle, their recordings played with asciinema-player, and a terminate form
// on a live session. It only calls the REST API, with the user's own API token, so it can show and do
// exactly what the API lets that user see and do. The token is kept in sessionStorage (this tab, until
// it closes), never in localStorage or a cookie.
import * as AsciinemaPlayer from 'asciinema-player';
import 'asciinema-player/dist/bundle/asciinema-player.css';
import './style.css';
import { printable } from '../lib/printable.js';
import { SESSION_STATES, TERMINATE_REASON_MAX_CHARS } from '../shapes/enumerations.js';
// Types only: zod stays out of the page's script.
import type { CreatedSession, Operation, Session, User } from '../shapes/answers.js';

// --- the API ------------------------------------------------------------------------------------

const TOKEN_KEY = 'essh.token';
const token = () => sessionStorage.getItem(TOKEN_KEY);

interface Answer<T = any> {
  status: number;
  body: T;
  text: string;
  etag: string | null;
}

class SignedOut extends Error {}

interface Call {
  tokenOverride?: string;
  /** POST this JSON body (without one: a GET). */
  post?: object;
  /** The ETag of the answer the caller already has: an unchanged resource answers 304 with no body. */
  ifNoneMatch?: string | null;
}

/** Calls the API with the user's token; a 401 signs the user out. */
async function api<T = any>(path: string, call: Call = {}): Promise<Answer<T>> {
  const { tokenOverride, post, ifNoneMatch } = call;
  const t = tokenOverride ?? token();
  if (!t) throw new SignedOut();
  const headers: Record<string, string> = { authorization: `Bearer ${t}` };
  if (post) headers['content-type'] = 'application/json';
  if (ifNoneMatch) {
    headers['if-none-match'] = ifNoneMatch;
    // cache: 'no-store' (nothing the API says is kept on disk) otherwise sends Cache-Control: no-cache,
    // and express never answers 304 to that.
    headers['cache-control'] = 'max-age=0';
  }
  const res = await fetch(path, {
    method: post ? 'POST' : 'GET', headers, body: post ? JSON.stringify(post) : undefined, credentials: 'omit', cache: 'no-store',
  });
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
  return { status: res.status, body, text, etag: res.headers.get('etag') };
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

// --- keeping a view up to date ------------------------------------------------------------------

const POLL_MS = 2_000;
const POLL_BACKOFF_MAX_MS = 60_000;

/** Stops the shown view's polling; route() calls it before showing another view. */
let stopPolling = () => {};

type Tick = 'unchanged' | 'changed' | 'failed' | 'done';

/**
 * Calls `tick` every POLL_MS while the tab is visible, one call at a time: a hidden tab makes no
 * request at all, and becoming visible again checks at once. After a failure (the API down, a 5xx)
 * the wait doubles, up to POLL_BACKOFF_MAX_MS, so that a struggling API is not hammered. Polling
 * (rather than server-sent events) because the list already answers with an ETag: an unchanged page
 * is a 304 with no body, and nothing in the API has to hold a connection per open tab.
 */
function keepUpToDate(tick: () => Promise<Tick>) {
  stopPolling();
  let wait = POLL_MS;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running = false;
  let stopped = false;
  const schedule = () => {
    clearTimeout(timer);
    if (!stopped && document.visibilityState === 'visible') timer = setTimeout(run, wait);
  };
  const run = async () => {
    if (stopped || running || document.visibilityState !== 'visible') return;
    running = true;
    let outcome: Tick;
    try {
      outcome = await tick();
    } catch (err) {
      if (err instanceof SignedOut) return stop();
      outcome = 'failed';
    } finally {
      running = false;
    }
    if (outcome === 'done') return stop();
    wait = outcome === 'failed' ? Math.min(wait * 2, POLL_BACKOFF_MAX_MS) : POLL_MS;
    schedule();
  };
  const onVisibility = () => (document.visibilityState === 'visible' ? void run() : clearTimeout(timer));
  const stop = () => {
    stopped = true;
    clearTimeout(timer);
    document.removeEventListener('visibilitychange', onVisibility);
  };
  document.addEventListener('visibilitychange', onVisibility);
  stopPolling = stop;
  schedule();
}

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
    const r = await api<User>('/me', { tokenOverride: t });
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
  const mine = routeSeq;
  const filters = { app: params.get('app') ?? '', state: params.get('state') ?? '', user: params.get('user') ?? '' };
  const [apps, users] = await Promise.all([
    listAll<{ handle: string }>('/apps').catch(() => []),
    listAll<{ id: number; name: string; email: string }>('/users').catch(() => []),
  ]);
  if (mine !== routeSeq) return;
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
  type SessionPage = { items: Session[]; next_cursor: string | null };
  const page = (limit: number, cursor?: string | null) => {
    const q = new URLSearchParams(query);
    q.set('limit', String(limit));
    if (cursor) q.set('cursor', cursor);
    return `/sessions?${q}`;
  };

  // The rows shown, by session id, each with the JSON it was drawn from (a row is redrawn only when it changed).
  const shown = new Map<number, { json: string; row: HTMLTableRowElement }>();
  /**
   * Draws `items` (a page, newest first). With `coversFrom`, the page is the whole list from the top
   * down to that id: a shown row in that range that the page no longer holds (a filter it no longer
   * matches) goes.
   */
  const merge = (items: Session[], coversFrom?: number) => {
    const fresh = new Set(items.map((s) => s.id));
    if (coversFrom !== undefined) {
      for (const [id, { row }] of shown) if (id >= coversFrom && !fresh.has(id)) (row.remove(), shown.delete(id));
    }
    for (const s of items) {
      const json = JSON.stringify(s);
      const old = shown.get(s.id);
      if (old?.json === json) continue;
      const row = sessionRow(s);
      shown.set(s.id, { json, row });
      if (old) old.row.replaceWith(row);
      else {
        // Newest first: before the first shown row with a smaller id.
        const before = [...shown.entries()].filter(([id]) => id < s.id).sort(([a], [b]) => b - a)[0];
        rows.insertBefore(row, before?.[1].row ?? null);
      }
    }
    status.replaceChildren(shown.size ? '' : alertBox('No sessions to show.', 'info'));
  };

  let cursor: string | null = null;
  const loadMore = async () => {
    const r = await api<SessionPage>(page(50, cursor));
    if (r.status !== 200) return void status.replaceChildren(alertBox(messageOf(r)));
    merge(r.body.items);
    cursor = r.body.next_cursor;
    more.hidden = !cursor;
  };
  more.addEventListener('click', () => void loadMore());
  await loadMore();
  if (mine !== routeSeq) return;

  // Every POLL_MS, the top of the list again, as many rows as are shown: new sessions appear and state
  // changes show. Rows below that (after More, past the largest page) keep what they showed.
  let etag: string | null = null;
  keepUpToDate(async () => {
    const limit = Math.min(500, Math.max(50, shown.size));
    const r = await api<SessionPage>(page(limit), { ifNoneMatch: etag });
    if (r.status === 304) return 'unchanged';
    if (r.status !== 200) return status.replaceChildren(alertBox(messageOf(r))), 'failed';
    etag = r.etag;
    const last = r.body.items.at(-1);
    merge(r.body.items, r.body.next_cursor && last ? last.id : -Infinity);
    return 'changed';
  });
}

function sessionRow(s: Session) {
  return h('tr', { 'data-session': String(s.id), 'data-state': s.state },
    h('td', {}, h('a', { href: `#/sessions/${s.id}` }, String(s.id))),
    h('td', {}, s.app), h('td', {}, s.user.email), h('td', {}, h('span', { class: `state ${s.state}` }, s.state)),
    h('td', {}, time(s.created_at)), h('td', {}, time(s.ended_at)), h('td', {}, s.end_reason ?? ''),
    h('td', {}, s.exit_code === null ? '' : String(s.exit_code)));
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
  const mine = routeSeq;
  show(h('p', {}, `Loading session ${id}…`));
  const [session, operation] = await Promise.all([api<Session>(`/sessions/${id}`), api<Operation>(`/operations/${id}`)]);
  if (mine !== routeSeq) return;
  if (session.status !== 200) {
    return show(h('h1', {}, `Session ${id}`), alertBox(messageOf(session), session.status === 404 ? 'not-found' : 'error'),
      h('p', {}, h('a', { href: '#/sessions' }, '← All sessions')));
  }
  let s = session.body;
  const title = h('h1', {});
  const lifecycleBox = h('div', {});
  const fieldsBox = h('div', {});
  const terminateBox = h('div', {});
  const liveBox = h('div', {});
  const player = h('div', { id: 'player', class: 'player' }, h('p', {}, 'Loading the recording…'));
  const draw = () => {
    title.replaceChildren(`Session ${s.id} `, h('span', { class: `state ${s.state}`, id: 'session-state' }, s.state));
    lifecycleBox.replaceChildren(lifecycle(s));
    fieldsBox.replaceChildren(fields([
      ['App', s.app], ['Account', s.account], ['Stack', s.stack], ['User', `${s.user.name} <${s.user.email}>`],
      ['State', s.state], ['End reason', s.end_reason], ['End message', s.end_message], ['Ended by', s.ended_by],
      ['Exit code', s.exit_code === null ? null : String(s.exit_code)], ['Command', s.command ? s.command.join(' ') : "the app's shell"],
      ['Container size', `${s.container_size_mb} MB`], ['Container', s.container_id], ['Workflow', s.workflow_id],
      ['Created', time(s.created_at)], ['Connected', time(s.connected_at)], ['Ended', time(s.ended_at)], ['Expires', time(s.expires_at)],
    ]));
    // Kept while it is shown, so that a state change does not wipe a reason being typed.
    if (!isLive(s)) terminateBox.replaceChildren();
    else if (!terminateBox.firstChild) terminateBox.replaceChildren(terminateForm(s.id, (answer) => {
      // The answer says `ending` (or `ended`); the polling below shows the rest.
      s = answer;
      draw();
    }));
    if (s.state !== 'active') {
      closeLiveView();
      liveBox.replaceChildren();
    } else if (!liveBox.firstChild) liveBox.replaceChildren(liveView(s.id));
  };
  draw();
  show(
    h('p', {}, h('a', { href: '#/sessions' }, '← All sessions')),
    title,
    terminateBox,
    h('section', {}, h('h2', {}, 'Lifecycle'), lifecycleBox),
    h('section', {}, h('h2', {}, 'Recording'), liveBox, player),
    h('section', {}, h('h2', {}, 'Session'), fieldsBox),
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
  if (mine !== routeSeq || s.state === 'ended') return;

  // A session not yet ended is followed until it is; then its recording is loaded again, whole.
  let etag = session.etag;
  const check = async (): Promise<Tick> => {
    const r = await api<Session>(`/sessions/${s.id}`, { ifNoneMatch: etag });
    if (r.status === 304) return 'unchanged';
    if (r.status !== 200) return 'failed';
    etag = r.etag;
    s = r.body;
    draw();
    if (s.state !== 'ended') return 'changed';
    await showRecording(s, player);
    return 'done';
  };
  keepUpToDate(check);
}

/** A session that a terminate can still end. */
const isLive = (s: Session) => s.state !== 'ended' && s.state !== 'ending';

/**
 * The terminate button and its form. It is shown on every live session the user can see: the API's
 * rule is that whoever may see a session (its owner, an admin of its account, an operator) may end it,
 * and the API does not say more. Should the API refuse all the same (rights withdrawn meanwhile, a
 * reason too long), its sentence is shown under the form.
 */
function terminateForm(id: number, answered: (s: Session) => void) {
  const open = h('button', { type: 'button', id: 'terminate-open', class: 'danger' }, 'Terminate…');
  const reason = h('textarea', {
    id: 'terminate-reason', name: 'reason', required: true, maxlength: String(TERMINATE_REASON_MAX_CHARS), rows: '2',
    placeholder: 'Why: it is recorded with the session and shown to its user.',
  });
  const problem = h('div', { id: 'terminate-problem' });
  const submit = h('button', { type: 'submit', class: 'danger' }, 'Terminate the session');
  const cancel = h('button', { type: 'button' }, 'Cancel');
  const form = h('form', { id: 'terminate', class: 'terminate', hidden: true },
    h('label', { for: 'terminate-reason' }, `Reason (required, up to ${TERMINATE_REASON_MAX_CHARS} characters)`), reason,
    h('div', { class: 'actions' }, submit, cancel), problem);
  open.addEventListener('click', () => {
    form.hidden = false;
    open.hidden = true;
    reason.focus();
  });
  cancel.addEventListener('click', () => {
    form.hidden = true;
    open.hidden = false;
    problem.replaceChildren();
  });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = reason.value.trim();
    if (!text) return void problem.replaceChildren(alertBox('Say why the session is ended: the reason is recorded with it.'));
    submit.disabled = true;
    try {
      const r = await api<Session>(`/sessions/${id}/terminate`, { post: { reason: text } });
      if (r.status !== 202) return void problem.replaceChildren(alertBox(messageOf(r)));
      answered(r.body);
    } catch (err) {
      if (!(err instanceof SignedOut)) problem.replaceChildren(alertBox(`The terminate was not sent: ${(err as Error).message}`));
    } finally {
      submit.disabled = false;
    }
  });
  return h('section', { class: 'terminate-box' }, open, form);
}

/** The live view's player while it is shown: its event stream makes the viewer an observer until it is closed. */
let livePlayer: { dispose(): void } | null = null;
function closeLiveView() {
  livePlayer?.dispose();
  livePlayer = null;
}

/**
 * Watching an active session live, read-only, in the player: a one-time watch token from the API, then
 * the session's output as server-sent events from GET /sessions/{id}/live (an EventSource sends no
 * Authorization header, so the token goes in the URL; it works once, for this user). The session's
 * user is told that someone watches, as for `essh watch`.
 */
function liveView(id: number) {
  const problem = h('div', { id: 'live-problem' });
  // Its own place, above the recording so far (which loads meanwhile and is reloaded at the end).
  const into = h('div', {});
  const button = h('button', { type: 'button', id: 'watch-live' }, 'Watch live');
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      const r = await api<CreatedSession>(`/sessions/${id}/watch`, { post: {} });
      if (r.status !== 201) return void problem.replaceChildren(alertBox(messageOf(r)));
      closeLiveView();
      const el = h('div', { class: 'player-frame', id: 'live-player' });
      into.replaceChildren(h('p', { id: 'live-note' }, 'Live, read-only: the session\'s user is told that you are watching. Leave this page to stop.'), el);
      button.hidden = true;
      // The player's eventsource driver (its live streaming) is not in its type declarations.
      const live = { driver: 'eventsource', url: `/sessions/${id}/live?token=${encodeURIComponent(r.body.connect.token)}` } as unknown as AsciinemaPlayer.UrlSource;
      livePlayer = AsciinemaPlayer.create(live, el, { autoPlay: true, fit: 'width', terminalFontSize: 'small' });
    } catch (err) {
      if (!(err instanceof SignedOut)) problem.replaceChildren(alertBox(`The live view could not start: ${(err as Error).message}`));
    } finally {
      button.disabled = false;
    }
  });
  return h('div', { class: 'live-box' }, button, problem, into);
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

/**
 * Counts the routes taken: a view whose data arrives after the user has moved on (a list still loading
 * when a session is opened) must not replace the view that followed it, nor take over its polling.
 */
let routeSeq = 0;

async function route() {
  routeSeq++;
  stopPolling();
  closeLiveView();
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
