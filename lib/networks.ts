/**
 * Which Docker networks a session container may join (CONTRACT §7). `host` would give the session the
 * host's loopback services (Temporal, the API, the database), `container:…` another container's
 * namespace and `none` nothing an app can work with: all three are refused for everyone, at the API
 * and again when a container is created (an older database may still hold one).
 */
export function forbiddenNetworkReason(network: string): string | null {
  const n = network.trim().toLowerCase();
  if (n === 'host') return 'the host network would let the session reach every service on the host, other tenants\' included';
  if (n === 'none') return 'a session without a network cannot work like the app';
  if (n.startsWith('container:')) return 'joining another container\'s network namespace would let the session reach that container';
  if (n === 'bridge' || n === 'default') return 'Docker\'s default bridge lets containers reach each other; leave "network" out for essh\'s isolated network';
  return null;
}

/**
 * The network every session container joins unless an operator set the app's own: a bridge with
 * inter-container traffic switched off, so that no session reaches another session's container,
 * whichever account it belongs to. Made once per installation on each engine.
 */
export const sessionNetworkName = (installation: string) => `essh-${installation}`;
