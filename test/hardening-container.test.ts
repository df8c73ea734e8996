import { beforeAll, describe, expect, it } from 'vitest';
import { SESSION_CAPABILITIES } from '../host/containers.js';
import { containerExists, createTenant, docker, runInSession, useTestStack, waitForState } from './support/harness.js';
import { sessionContainer } from './support/harness.js';

/**
 * CONTRACT §7 through the real Docker engine: what the session container may not do, checked both
 * from outside (docker inspect, the engine's stats) and from inside (commands run in the session).
 */

const PIDS_LIMIT = 64;
const stack = useTestStack({ env: { ESSH_PIDS_LIMIT: String(PIDS_LIMIT) } });
let tenant: Awaited<ReturnType<typeof createTenant>>;

beforeAll(async () => {
  tenant = await createTenant(stack, { plan: 'scale' });
});

async function start(command: string[], body: object = {}) {
  const r = await stack.api.post(`/apps/${tenant.app}/sessions`, tenant.token, { command, ...body });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body as { id: number };
}
/** A command's verdict comes back as the session's exit code (it runs once the client attaches). */
async function exitOf(script: string, body: object = {}) {
  const r = await runInSession(stack, tenant, { command: ['sh', '-c', script], body, endTimeoutMs: 60_000 });
  expect(r.ended.end_reason, JSON.stringify(r.ended)).toBe('exit');
  expect(r.exitCode).toBe(r.ended.exit_code);
  return r.ended;
}

describe('the session container, seen from the engine', () => {
  it('is not privileged, has no-new-privileges, a pids limit, memory = swap = size, no mounts, no ports, restart no', async () => {
    const s = await start(['sleep', '600'], { container_size_mb: 256 });
    await waitForState(stack, tenant.token, s.id, 'waiting_for_client');
    const info = await docker.getContainer(sessionContainer(stack, s.id)).inspect();
    const hc = info.HostConfig;
    expect(hc.Privileged).toBe(false);
    expect(hc.SecurityOpt).toContain('no-new-privileges');
    expect(hc.PidsLimit).toBe(PIDS_LIMIT);
    expect(hc.Memory).toBe(256 * 1024 * 1024);
    expect(hc.MemorySwap).toBe(256 * 1024 * 1024);
    expect(hc.RestartPolicy?.Name).toBe('no');
    // Every capability dropped but the documented few (docs/threat-model.md).
    expect(hc.CapDrop).toEqual(['ALL']);
    expect([...(hc.CapAdd ?? [])].sort()).toEqual([...SESSION_CAPABILITIES].sort());
    expect(hc.Devices ?? []).toEqual([]);
    expect(hc.Binds ?? []).toEqual([]);
    // The only host paths: the idle init (CONTRACT §7), the port-forward relay and the SFTP server's
    // folder beside it, all read-only programs of essh's (docs/contract-departures.md).
    expect(info.Mounts.map((m) => ({ type: m.Type, dest: m.Destination, rw: m.RW })).sort((a, b) => a.dest.localeCompare(b.dest)))
      .toEqual([{ type: 'bind', dest: '/.essh/init', rw: false }, { type: 'bind', dest: '/.essh/relay', rw: false }, { type: 'bind', dest: '/.essh/sftp', rw: false }]);
    expect(hc.PublishAllPorts).toBe(false);
    expect(Object.keys(hc.PortBindings ?? {})).toEqual([]);
    expect(hc.PidMode || '').not.toBe('host');
    expect(hc.IpcMode).not.toBe('host');
    expect(hc.NetworkMode).not.toBe('host');
    expect((await stack.api.post(`/sessions/${s.id}/terminate`, tenant.token, {})).status).toBe(202);
    await waitForState(stack, tenant.token, s.id, 'ended');
  });
});

describe('the session container, seen from inside', () => {
  it('has no Docker socket, no host path and NoNewPrivs set', async () => {
    const ended = await exitOf([
      'for p in /var/run/docker.sock /run/docker.sock /var/lib/docker /host /proc/1/root/var/run/docker.sock; do test -e $p && exit 10; done',
      'ls /var/run/docker.sock 2>/dev/null && exit 11',
      // Every mount is the container's own: overlay root, proc, sys, dev, cgroup, Docker's
      // resolv.conf/hostname/hosts files and essh's idle init, relay and SFTP server folder, read-only; nothing else from the host.
      "awk '{print $2}' /proc/mounts | grep -vE '^/(proc|sys|dev)(/|$)|^/$|^/etc/(resolv.conf|hostname|hosts)$|^/.essh/(init|relay|sftp)$' && exit 12",
      "grep ' /.essh/init ' /proc/mounts | grep -qE ' ro[ ,]' || exit 15",
      "grep ' /.essh/relay ' /proc/mounts | grep -qE ' ro[ ,]' || exit 17",
      "grep ' /.essh/sftp ' /proc/mounts | grep -qE ' ro[ ,]' || exit 19",
      'echo x > /.essh/init 2>/dev/null && exit 16',
      'echo x > /.essh/relay 2>/dev/null && exit 18',
      'echo x > /.essh/sftp/sftp-server 2>/dev/null && exit 21',
      'touch /.essh/sftp/new 2>/dev/null && exit 22',
      'grep -q "NoNewPrivs:.1" /proc/self/status || exit 13',
      // No capability to administer the system: mounting is refused.
      'mkdir -p /tmp/m && mount -t tmpfs none /tmp/m 2>/dev/null && exit 14',
      'exit 0',
    ].join('; '));
    expect(ended.exit_code).toBe(0);
  });

  it(`the pids limit holds: a shell spawning 200 processes gets at most ${PIDS_LIMIT}`, async () => {
    // ash exits when a fork fails, so the spawner stops at the limit; the count is a glob (no fork).
    const ended = await exitOf('sh -c "while :; do sleep 60 & done" 2>/dev/null; set -- /proc/[0-9]*; exit $#');
    expect(ended.exit_code).toBeGreaterThan(PIDS_LIMIT / 2);
    expect(ended.exit_code).toBeLessThanOrEqual(PIDS_LIMIT);
  });

  it('a fork bomb is contained: the kernel refuses forks at the limit, the session and the host carry on', async () => {
    const ended = await exitOf([
      // cgroup v1 keeps the pids controller in its own directory, v2 in the container's root.
      'd=/sys/fs/cgroup/pids; [ -f $d/pids.max ] || d=/sys/fs/cgroup',
      `[ "$(cat $d/pids.max)" = ${PIDS_LIMIT} ] || exit 20`,
      '(b() { b | b & }; b) 2>/dev/null',
      // While the bomb holds every free pid this shell cannot fork either (and ash exits when a fork
      // fails), so it waits and ends the bomb with builtins only: `read -t` on /dev/zero, which never
      // gives a newline, times out; `kill -9 -1` signals every process but init and this shell.
      'read -t 2 _ < /dev/zero',
      'kill -9 -1 2>/dev/null',
      'read -t 1 _ < /dev/zero',
      // "max N": how many forks the limit refused.
      "refused=$(awk '/^max/ {print $2}' $d/pids.events)",
      '[ "$refused" -gt 0 ] || exit 21',
      'exit 0',
    ].join('; '));
    expect(ended.exit_code).toBe(0);
    expect(await containerExists(sessionContainer(stack, ended.id))).toBe(false);
    // The host is unharmed: the API answers and a new session runs.
    const next = await exitOf('exit 7');
    expect(next.exit_code).toBe(7);
  }, 90_000);

  it('memory is enforced: 2 GB held in a 1024 MB session is OOM-killed and the session ends saying so', async () => {
    // busybox tail keeps its whole input when it holds no newline: 2000 MB of zeros stay in memory.
    const ended = await exitOf('head -c 2000m /dev/zero | tail; exit $?');
    expect(ended.container_size_mb).toBe(1024);
    expect(ended.exit_code).toBe(137);
    expect(ended.end_message).toBe("the program ran out of the container's 1024 MB of memory and was killed");
    expect(await containerExists(sessionContainer(stack, ended.id))).toBe(false);
    const op = await stack.api.get(`/operations/${ended.id}`, tenant.token);
    expect(op.body).toMatchObject({ end_reason: 'exit', exit_code: 137 });
  }, 90_000);
});
