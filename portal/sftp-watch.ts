// What the portal learns of a file transfer by watching the SFTP packets go by (draft-ietf-secsh-filexfer-02,
// version 3, which OpenSSH speaks): which file each handle is, which way its bytes went and how many. The
// packets pass unchanged; only their heads are read, never a file's bytes. sftp-server's own log (-l
// INFO) says as much, but cuts a line at about 1 KB (a long path loses its byte counts) and prints a
// line break in a file name as it is: a client could leave no record or a false one.

/** The packet types watched; the others pass unread. */
const FXP = { open: 3, close: 4, read: 5, write: 6, status: 101, handle: 102, data: 103 } as const;
/** SSH_FXF_WRITE among an OPEN's flags: the client writes the file (an upload). */
const FXF_WRITE = 0x02;
/** OpenSSH's sftp-server refuses a packet longer than this (SFTP_MAX_MSG_LENGTH): a stream with one is not SFTP. */
const MAX_PACKET = 256 * 1024;
/** A path longer than this (Linux's PATH_MAX is 4096) is kept cut. */
const MAX_PATH_HEAD = 8192;

/**
 * How many bytes of a packet after its type are read: up to an OPEN's flags, a WRITE's length, a DATA's
 * length (ids, handles, at most MAX_PATH_HEAD of a path); none of the data that follows.
 */
function headBytes(type: number): number {
  switch (type) {
    case FXP.open: return MAX_PATH_HEAD;
    case FXP.write: return 4 + 4 + 256 + 8 + 4;
    case FXP.data: return 4 + 4;
    case FXP.close: case FXP.read: case FXP.status: case FXP.handle: return 4 + 4 + 256 + 8 + 4;
    default: return 0;
  }
}

/** Cuts one direction's bytes into SFTP packets, handing over each watched packet's type and head. */
class PacketHeads {
  private readonly lengthAndType = Buffer.alloc(5);
  private have = 0;
  private type = 0;
  /** Bytes of the current packet still to come after its type; -1 between packets. */
  private remaining = -1;
  private head: Buffer = Buffer.alloc(0);
  private headHave = 0;
  /** Something that is not SFTP went by: nothing more is read (sftp-server ends such a connection). */
  broken = false;

  constructor(private readonly onPacket: (type: number, head: Buffer) => void) {}

  push(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length && !this.broken) {
      if (this.remaining < 0) {
        const take = Math.min(5 - this.have, chunk.length - at);
        chunk.copy(this.lengthAndType, this.have, at, at + take);
        this.have += take;
        at += take;
        if (this.have < 5) return;
        this.have = 0;
        const length = this.lengthAndType.readUInt32BE(0);
        if (length < 1 || length > MAX_PACKET) {
          this.broken = true;
          return;
        }
        this.type = this.lengthAndType[4]!;
        this.remaining = length - 1;
        this.head = Buffer.allocUnsafe(Math.min(this.remaining, headBytes(this.type)));
        this.headHave = 0;
      }
      const take = Math.min(this.remaining, chunk.length - at);
      if (this.headHave < this.head.length) {
        const copied = chunk.copy(this.head, this.headHave, at, at + Math.min(take, this.head.length - this.headHave));
        this.headHave += copied;
      }
      at += take;
      this.remaining -= take;
      if (this.remaining === 0) {
        this.remaining = -1;
        if (this.head.length > 0) this.onPacket(this.type, this.head);
      }
    }
  }
}

/** A uint32-length string at `at` (a path or a handle), or null when the head ends before it does. */
function stringAt(b: Buffer, at: number): { value: Buffer; next: number } | null {
  if (at + 4 > b.length) return null;
  const length = b.readUInt32BE(at);
  const end = at + 4 + length;
  if (end > b.length) return null;
  return { value: b.subarray(at + 4, end), next: end };
}

export interface Transfer {
  path: string;
  direction: 'upload' | 'download';
  bytes: number;
  /** The session's SFTP ended with the file still open. */
  interrupted?: true;
}

interface OpenFile {
  path: string;
  upload: boolean;
  read: number;
  written: number;
}

/**
 * Follows one SFTP session's files from their OPEN to their CLOSE and reports each as a transfer: an
 * upload if it was opened for writing (the bytes the server acknowledged writing), else a download (the
 * bytes the server sent back). Feed it the client's bytes (`fromClient`) and the server's (`fromServer`),
 * each in order; `end()` reports the files still open.
 */
export class TransferWatch {
  /** OPEN requests awaiting their handle, by request id. */
  private readonly opening = new Map<number, { path: string; upload: boolean }>();
  private readonly files = new Map<string, OpenFile>();
  /** READ and WRITE requests awaiting their answer, by request id. */
  private readonly reading = new Map<number, string>();
  private readonly writing = new Map<number, { handle: string; bytes: number }>();

  constructor(private readonly onTransfer: (t: Transfer) => void) {}

  private readonly client = new PacketHeads((type, b) => {
    if (b.length < 4) return;
    const id = b.readUInt32BE(0);
    if (type === FXP.open) {
      const path = stringAt(b, 4);
      // A path cut at MAX_PATH_HEAD: what there is of it, marked.
      const name = path ? path.value.toString('utf8') : `${b.subarray(8).toString('utf8')}…`;
      const flags = path && path.next + 4 <= b.length ? b.readUInt32BE(path.next) : 0;
      this.opening.set(id, { path: name, upload: (flags & FXF_WRITE) !== 0 });
      return;
    }
    const handle = stringAt(b, 4);
    if (!handle) return;
    const key = handle.value.toString('hex');
    if (type === FXP.read && this.files.has(key)) this.reading.set(id, key);
    else if (type === FXP.write && this.files.has(key) && handle.next + 12 <= b.length) {
      this.writing.set(id, { handle: key, bytes: b.readUInt32BE(handle.next + 8) });
    } else if (type === FXP.close) {
      const file = this.files.get(key);
      if (!file) return;
      this.files.delete(key);
      this.report(file, false);
    }
  });

  private readonly server = new PacketHeads((type, b) => {
    if (b.length < 4) return;
    const id = b.readUInt32BE(0);
    if (type === FXP.handle) {
      const opened = this.opening.get(id);
      const handle = stringAt(b, 4);
      if (!opened || !handle) return;
      this.opening.delete(id);
      this.files.set(handle.value.toString('hex'), { ...opened, read: 0, written: 0 });
    } else if (type === FXP.data) {
      const key = this.reading.get(id);
      this.reading.delete(id);
      const file = key === undefined ? undefined : this.files.get(key);
      if (file && b.length >= 8) file.read += b.readUInt32BE(4);
    } else if (type === FXP.status) {
      // An OPEN refused, a READ at the end of the file, a WRITE done (status 0: SSH_FX_OK) or not.
      this.opening.delete(id);
      this.reading.delete(id);
      const write = this.writing.get(id);
      this.writing.delete(id);
      const file = write && this.files.get(write.handle);
      if (file && b.length >= 8 && b.readUInt32BE(4) === 0) file.written += write.bytes;
    }
  });

  fromClient(chunk: Buffer): void {
    this.client.push(chunk);
  }

  fromServer(chunk: Buffer): void {
    this.server.push(chunk);
  }

  /** The SFTP session is over: each file still open was cut short. */
  end(): void {
    for (const file of this.files.values()) this.report(file, true);
    this.files.clear();
  }

  private report(file: OpenFile, interrupted: boolean) {
    this.onTransfer({
      path: file.path, direction: file.upload ? 'upload' : 'download', bytes: file.upload ? file.written : file.read,
      ...(interrupted ? { interrupted: true as const } : {}),
    });
  }
}
