import type Docker from 'dockerode';
import type { Db } from '../lib/db.js';
import { LABELS, dockerMessage, dockerStatus } from '../lib/docker.js';
import { sessionNetworkName } from '../lib/networks.js';

const sessionNetworks = new Map<string, Promise<string>>();
/** A process that claimed the making of the network and did not finish within this is taken to be gone. */
const NETWORK_CLAIM_S = 30;

/**
 * The installation's session network on this engine (see lib/networks.ts), made if missing; resolves
 * with its id. The engine's duplicate check is not atomic, and a second network of the same name
 * makes every container create ambiguous, so the host processes sharing the installation's database
 * elect one maker through it (a `settings` row); the others wait for the network to appear.
 */
export function ensureSessionNetwork(docker: Docker, installation: string, db: Db): Promise<string> {
  const name = sessionNetworkName(installation);
  let made = sessionNetworks.get(name);
  if (!made) {
    made = makeSessionNetwork(docker, installation, db, name);
    sessionNetworks.set(name, made);
    made.catch(() => sessionNetworks.delete(name));
  }
  return made;
}

async function makeSessionNetwork(docker: Docker, installation: string, db: Db, name: string): Promise<string> {
  const find = async () => (await docker.listNetworks({ filters: { name: [name] } })).find((n) => n.Name === name)?.Id;
  const claimKey = `making-network:${name}`;
  const deadline = Date.now() + NETWORK_CLAIM_S * 2 * 1000;
  for (;;) {
    const id = await find();
    if (id) return id;
    const claimed = await db.insertInto('settings').values({ key: claimKey, value: new Date().toISOString() })
      .onConflict((oc) => oc.column('key').doNothing()).executeTakeFirst();
    if (Number(claimed.numInsertedOrUpdatedRows ?? 0) === 1) {
      try {
        const network = await docker.createNetwork({
          Name: name, Driver: 'bridge', CheckDuplicate: true,
          Options: { 'com.docker.network.bridge.enable_icc': 'false' },
          Labels: { [LABELS.instance]: installation },
        });
        return network.id;
      } catch (err) {
        if (/address pool/i.test(dockerMessage(err))) {
          throw new Error(`the Docker engine has no free address range for essh's session network ${name} (${dockerMessage(err)}); remove unused networks (docker network prune) or widen the engine's default-address-pools`);
        }
        if (dockerStatus(err) !== 409) throw err;
      } finally {
        await db.deleteFrom('settings').where('key', '=', claimKey).execute();
      }
      continue;
    }
    // Another process is making it; a claim left by a process that died is cleared after a while.
    const claim = await db.selectFrom('settings').select('value').where('key', '=', claimKey).executeTakeFirst();
    if (claim && Date.parse(claim.value) < Date.now() - NETWORK_CLAIM_S * 1000) {
      await db.deleteFrom('settings').where('key', '=', claimKey).where('value', '=', claim.value).execute();
    }
    if (Date.now() > deadline) throw new Error(`essh's session network ${name} did not appear on the engine`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Removes the installation's session network from the engine (a thrown-away installation's: host/containers.ts). */
export async function removeSessionNetwork(docker: Docker, installation: string): Promise<void> {
  await docker.getNetwork(sessionNetworkName(installation)).remove().catch(() => undefined);
  sessionNetworks.delete(sessionNetworkName(installation));
}
