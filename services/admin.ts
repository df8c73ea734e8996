import type { Db } from '../lib/db.js';
import type { SecretBox } from '../lib/secrets.js';
import { AccountsService } from './accounts.js';
import { ApiTokensService } from './api-tokens.js';
import { AppsService } from './apps.js';
import { SshKeysService } from './ssh-keys.js';
import { StacksService } from './stacks.js';
import { UsersService } from './users.js';

/**
 * The administration, one service per resource (accounts, stacks, apps, users, their API tokens and
 * SSH keys), built together: every rule of who may do what to them lives in those services.
 */
export class AdminService {
  readonly accounts: AccountsService;
  readonly stacks: StacksService;
  readonly apps: AppsService;
  readonly tokens: ApiTokensService;
  readonly users: UsersService;
  readonly sshKeys: SshKeysService;

  constructor(
    db: Db,
    secrets: SecretBox,
    /** tokenDefaultTtlS: how long an API token issued without `expires_at` lasts (ESSH_TOKEN_DEFAULT_TTL_S); 0: for ever. */
    opts: { tokenDefaultTtlS?: number } = {},
  ) {
    this.accounts = new AccountsService(db);
    this.stacks = new StacksService(db);
    this.apps = new AppsService(db, secrets, this.accounts);
    this.tokens = new ApiTokensService(db, opts);
    this.users = new UsersService(db, this.accounts, this.tokens);
    this.sshKeys = new SshKeysService(db, secrets);
  }
}
