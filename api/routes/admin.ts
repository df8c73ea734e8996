import type { RouteModule } from '../route.js';
import * as s from '../schemas.js';
import * as req from '../../shapes/requests.js';

/** What a user's id opens. */
const userLinks = Object.fromEntries(['getUser', 'createApiToken', 'listApiTokens', 'createSshKeyChallenge', 'addSshKey', 'listSshKeys'].map((op) => [op, { id: '$response.body#/id' }]));

/** Accounts, stacks, apps, users, their tokens and SSH keys (CONTRACT §3, README "Who may do what"). */
export const registerAdminRoutes: RouteModule = (route, { admin }) => {
  // --- accounts
  route({ method: 'post', path: '/accounts', operationId: 'createAccount', tag: 'accounts', summary: 'Create an account (operator)',
    status: 201, errors: [403, 409], body: req.createAccountBody, response: s.accountSchema,
    links: Object.fromEntries(['getAccount', 'updateAccount', 'listLogDrains', 'createLogDrain', 'listRedactionRules', 'createRedactionRule']
      .map((op) => [op, { account: '$response.body#/handle' }])),
    handler: ({ principal, body }) => admin.accounts.create(principal, body) });
  route({ method: 'get', path: '/accounts', operationId: 'listAccounts', tag: 'accounts', summary: 'List the accounts you belong to (operators: all)',
    query: s.listQuery(), response: s.accountListSchema,
    handler: ({ principal, query }) => admin.accounts.list(principal, s.pageRequest(query)) });
  route({ method: 'get', path: '/accounts/{account}', operationId: 'getAccount', tag: 'accounts', summary: 'One account',
    params: s.params.account, response: s.accountSchema,
    handler: ({ principal, params }) => admin.accounts.get(principal, params.account) });
  route({ method: 'patch', path: '/accounts/{account}', operationId: 'updateAccount', tag: 'accounts',
    summary: "Change an account's plan, limit and grants (operator)", errors: [403, 409],
    params: s.params.account, body: req.patchAccountBody, response: s.accountSchema,
    handler: ({ principal, params, body }) => admin.accounts.patch(principal, params.account, body) });

  // --- stacks
  route({ method: 'post', path: '/stacks', operationId: 'createStack', tag: 'stacks', summary: 'Create a stack (operator)',
    status: 201, errors: [403, 409], body: req.createStackBody, response: s.stackSchema,
    links: { getStack: { name: '$response.body#/name' } },
    handler: ({ principal, body }) => admin.stacks.create(principal, body) });
  route({ method: 'get', path: '/stacks', operationId: 'listStacks', tag: 'stacks', summary: 'List stacks',
    query: s.listQuery(), response: s.stackListSchema,
    handler: ({ principal, query }) => admin.stacks.list(principal, s.pageRequest(query)) });
  route({ method: 'get', path: '/stacks/{name}', operationId: 'getStack', tag: 'stacks', summary: 'One stack',
    params: s.params.name, response: s.stackSchema,
    handler: ({ principal, params }) => admin.stacks.get(principal, params.name) });

  // --- apps
  route({ method: 'post', path: '/apps', operationId: 'createApp', tag: 'apps', summary: 'Create an app (account admins and operators)',
    status: 201, errors: [403, 404, 409], body: req.createAppBody, response: s.appSchema,
    links: Object.fromEntries(['getApp', 'updateApp', 'createSession', 'listAppOperations'].map((op) => [op, { app: '$response.body#/handle' }])),
    handler: ({ principal, body }) => admin.apps.create(principal, body) });
  route({ method: 'get', path: '/apps', operationId: 'listApps', tag: 'apps', summary: 'List the apps of your accounts (operators: all)',
    query: s.listQuery(), response: s.appListSchema,
    handler: ({ principal, query }) => admin.apps.list(principal, s.pageRequest(query)) });
  route({ method: 'get', path: '/apps/{app}', operationId: 'getApp', tag: 'apps', summary: 'One app, by handle',
    params: s.params.app, response: s.appSchema,
    handler: ({ principal, params }) => admin.apps.get(principal, params.app) });
  route({ method: 'patch', path: '/apps/{app}', operationId: 'updateApp', tag: 'apps',
    summary: "Change an app's settings (stack, network and warm_pool: operator)", errors: [403],
    params: s.params.app, body: req.patchAppBody, response: s.appSchema,
    handler: ({ principal, params, body }) => admin.apps.patch(principal, params.app, body) });

  // --- users, tokens, SSH keys
  route({ method: 'post', path: '/users', operationId: 'createUser', tag: 'users', summary: 'Create a user; the answer holds its first API token',
    status: 201, errors: [403, 404, 409], body: req.createUserBody, response: s.createdUserSchema, links: userLinks,
    handler: ({ principal, body }) => admin.users.create(principal, body) });
  route({ method: 'get', path: '/users', operationId: 'listUsers', tag: 'users',
    summary: 'List the users you may manage, and yourself', query: s.listQuery(), response: s.userListSchema,
    handler: ({ principal, query }) => admin.users.list(principal, s.pageRequest(query)) });
  route({ method: 'get', path: '/users/{id}', operationId: 'getUser', tag: 'users', summary: 'One user', errors: [403],
    params: s.params.id, response: s.userSchema,
    handler: ({ principal, params }) => admin.users.get(principal, params.id) });
  route({ method: 'post', path: '/users/{id}/tokens', operationId: 'createApiToken', tag: 'users', summary: 'Issue an API token (shown once)',
    status: 201, errors: [403], params: s.params.id, body: req.createTokenBody, response: s.issuedApiTokenSchema,
    links: { revokeApiToken: { id: '$request.path.id', tokenId: '$response.body#/id' } },
    handler: ({ principal, params, body }) => admin.tokens.create(principal, params.id, body) });
  route({ method: 'get', path: '/users/{id}/tokens', operationId: 'listApiTokens', tag: 'users', summary: "A user's tokens (never their values)",
    errors: [403], params: s.params.id, query: s.listQuery(), response: s.apiTokenListSchema,
    handler: ({ principal, params, query }) => admin.tokens.list(principal, params.id, s.pageRequest(query)) });
  route({ method: 'delete', path: '/users/{id}/tokens/{tokenId}', operationId: 'revokeApiToken', tag: 'users', summary: 'Revoke a token',
    status: 204, errors: [403], params: s.params.userToken,
    handler: ({ principal, params }) => admin.tokens.revoke(principal, params.id, params.tokenId) });
  route({ method: 'post', path: '/users/{id}/ssh_key_challenges', operationId: 'createSshKeyChallenge', tag: 'users',
    summary: 'A challenge to sign with a key you register (it lasts 5 minutes)',
    errors: [403], params: s.params.id, body: req.sshKeyChallengeBody, response: s.sshKeyChallengeSchema,
    handler: ({ principal, params, body }) => admin.sshKeys.challenge(principal, params.id, body.public_key) });
  route({ method: 'post', path: '/users/{id}/ssh_keys', operationId: 'addSshKey', tag: 'users',
    summary: 'Register an SSH public key, with proof of holding its private key',
    description: 'First POST /users/{id}/ssh_key_challenges with the public_key; sign its "challenge" with the key ' +
      '(`printf %s "$CHALLENGE" | ssh-keygen -Y sign -n essh-key-registration -f ~/.ssh/id_ed25519`) and send the three here. ' +
      '`essh keys add ~/.ssh/id_ed25519` does it all. 422 names what was wrong with the challenge or the signature.',
    status: 201, errors: [403, 409], params: s.params.id, body: req.addSshKeyBody, response: s.sshKeySchema,
    links: { deleteSshKey: { id: '$request.path.id', keyId: '$response.body#/id' } },
    handler: ({ principal, params, body }) => admin.sshKeys.add(principal, params.id, body) });
  route({ method: 'get', path: '/users/{id}/ssh_keys', operationId: 'listSshKeys', tag: 'users', summary: "A user's SSH keys",
    errors: [403], params: s.params.id, query: s.listQuery(), response: s.sshKeyListSchema,
    handler: ({ principal, params, query }) => admin.sshKeys.list(principal, params.id, s.pageRequest(query)) });
  route({ method: 'delete', path: '/users/{id}/ssh_keys/{keyId}', operationId: 'deleteSshKey', tag: 'users', summary: 'Remove an SSH key',
    status: 204, errors: [403], params: s.params.userSshKey,
    handler: ({ principal, params }) => admin.sshKeys.delete(principal, params.id, params.keyId) });
  route({ method: 'get', path: '/me', operationId: 'getMe', tag: 'users', summary: 'The calling user', response: s.userSchema, links: userLinks,
    handler: async ({ principal }) => admin.users.get(principal, principal.id) });
};
