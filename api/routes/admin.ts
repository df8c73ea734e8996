import type { RouteModule } from '../route.js';
import * as s from '../schemas.js';

export const registerAdminRoutes: RouteModule = (route, { admin }) => {
  route({ method: 'post', path: '/accounts', summary: 'Create an account (operator)', status: 201, body: s.createAccountBody,
    handler: ({ principal, body }) => admin.createAccount(principal, body) });
  route({ method: 'get', path: '/accounts', summary: 'List accounts', handler: ({ principal }) => admin.listAccounts(principal) });
  route({ method: 'get', path: '/accounts/{account}', summary: 'One account', params: s.params.account,
    handler: ({ principal, params }) => admin.getAccount(principal, params.account) });
  route({ method: 'patch', path: '/accounts/{account}', summary: "Change an account's plan, limit and grants (operator)",
    params: s.params.account, body: s.patchAccountBody,
    handler: ({ principal, params, body }) => admin.patchAccount(principal, params.account, body) });
  route({ method: 'post', path: '/stacks', summary: 'Create a stack (operator)', status: 201, body: s.createStackBody,
    handler: ({ principal, body }) => admin.createStack(principal, body) });
  route({ method: 'get', path: '/stacks', summary: 'List stacks', handler: ({ principal }) => admin.listStacks(principal) });
  route({ method: 'get', path: '/stacks/{name}', summary: 'One stack', params: s.params.name,
    handler: ({ principal, params }) => admin.getStack(principal, params.name) });
  route({ method: 'post', path: '/apps', summary: 'Create an app', status: 201, body: s.createAppBody,
    handler: ({ principal, body }) => admin.createApp(principal, body) });
  route({ method: 'get', path: '/apps', summary: 'List apps', handler: ({ principal }) => admin.listApps(principal) });
  route({ method: 'get', path: '/apps/{app}', summary: 'One app, by handle', params: s.params.app,
    handler: ({ principal, params }) => admin.getApp(principal, params.app) });
  route({ method: 'patch', path: '/apps/{app}', summary: "Change an app's settings (stack, network and warm_pool: operator)",
    params: s.params.app, body: s.patchAppBody,
    handler: ({ principal, params, body }) => admin.patchApp(principal, params.app, body) });
  route({ method: 'post', path: '/users', summary: 'Create a user; the answer holds its first API token', status: 201,
    body: s.createUserBody, handler: ({ principal, body }) => admin.createUser(principal, body) });
  route({ method: 'get', path: '/users', summary: 'List users', handler: ({ principal }) => admin.listUsers(principal) });
  route({ method: 'get', path: '/users/{id}', summary: 'One user', params: s.params.id,
    handler: ({ principal, params }) => admin.getUser(principal, params.id) });
  route({ method: 'post', path: '/users/{id}/tokens', summary: 'Issue an API token (shown once)', status: 201,
    params: s.params.id, body: s.createTokenBody,
    handler: ({ principal, params, body }) => admin.createToken(principal, params.id, body?.name) });
  route({ method: 'get', path: '/users/{id}/tokens', summary: "A user's tokens (never their values)", params: s.params.id,
    handler: ({ principal, params }) => admin.listTokens(principal, params.id) });
  route({ method: 'delete', path: '/users/{id}/tokens/{tokenId}', summary: 'Revoke a token', status: 204, params: s.params.userToken,
    handler: ({ principal, params }) => admin.revokeToken(principal, params.id, params.tokenId) });
  route({ method: 'post', path: '/users/{id}/ssh_keys', summary: 'Register an SSH public key', status: 201,
    params: s.params.id, body: s.addSshKeyBody,
    handler: ({ principal, params, body }) => admin.addSshKey(principal, params.id, body.public_key) });
  route({ method: 'get', path: '/users/{id}/ssh_keys', summary: "A user's SSH keys", params: s.params.id,
    handler: ({ principal, params }) => admin.listSshKeys(principal, params.id) });
  route({ method: 'delete', path: '/users/{id}/ssh_keys/{keyId}', summary: 'Remove an SSH key', status: 204,
    params: s.params.userSshKey, handler: ({ principal, params }) => admin.deleteSshKey(principal, params.id, params.keyId) });
  route({ method: 'get', path: '/me', summary: 'The calling user', handler: async ({ principal }) => admin.getUser(principal, principal.id) });

};
