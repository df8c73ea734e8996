import { expect } from 'vitest';
import { createTenant, type TestStack } from './harness.js';

/**
 * Session `id`'s recording, once it has the line `private-output`, is served to its owner, an admin of
 * its account and an operator; to another member of the account and to a stranger it does not exist;
 * without a token it is a 401; and an unknown session's is a 404.
 */
export async function expectRecordingOnlyForItsPeople(stack: TestStack, tenant: { account: string; token: string }, id: number) {
  const other = await stack.api.post('/users', stack.adminToken, { name: 'Other', email: `other-${id}@example.com`, role: 'member', accounts: [tenant.account] });
  const acctAdmin = await stack.api.post('/users', stack.adminToken, { name: 'Adm', email: `adm-${id}@example.com`, role: 'account_admin', accounts: [tenant.account] });
  const outsider = await createTenant(stack);
  const get = (token?: string) => stack.api.get(`/sessions/${id}/recording`, token);
  expect(String((await get(tenant.token)).body)).toContain('private-output');
  expect((await get(acctAdmin.body.token)).status).toBe(200);
  expect((await get(stack.adminToken)).status).toBe(200);
  expect((await get(other.body.token)).status).toBe(404);
  expect((await get(outsider.token)).status).toBe(404);
  expect((await get(undefined)).status).toBe(401);
  expect((await stack.api.get('/sessions/999999999999/recording', stack.adminToken)).status).toBe(404);
}
