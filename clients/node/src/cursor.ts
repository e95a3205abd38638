/**
 * Where a results consumer keeps its resume token between reconnects and across its own restarts.
 *
 * The token is the stream position after the last event the consumer finished processing; a
 * consumer process that restarts with the same store resumes exactly there, nothing lost or
 * doubled. Any durable place works (a row in the consumer's own database, written in the same
 * transaction as the event's effects, is the strongest); {@link FileCursorStore} is the default.
 */
import { randomBytes } from "node:crypto";
import { open, readFile, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/** A pair of callbacks: read the saved token, save a newer one. */
export interface CursorStore {
  /** The saved token, or undefined when there is none yet (the stream then starts from now). */
  load(): Promise<string | undefined>;
  /** Remember `token`; it replaces the previous one. Resolve only once it is durable. */
  save(token: string): Promise<void>;
}

/** Keeps the token in memory only: resumes across reconnects, not across process restarts. */
export class MemoryCursorStore implements CursorStore {
  constructor(private token: string | undefined = undefined) {}

  async load(): Promise<string | undefined> {
    return this.token;
  }

  async save(token: string): Promise<void> {
    this.token = token;
  }
}

/**
 * Keeps the token in one file, replaced atomically: the new token is written and flushed to a
 * temporary file beside it, which is then renamed over the old one and the directory flushed, so
 * a crash at any moment leaves either the old token or the new one, never a torn file.
 */
export class FileCursorStore implements CursorStore {
  constructor(readonly path: string) {}

  async load(): Promise<string | undefined> {
    let text: string;
    try {
      text = await readFile(this.path, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") {
        return undefined;
      }
      throw error;
    }
    const token = text.trim();
    return token === "" ? undefined : token;
  }

  async save(token: string): Promise<void> {
    const directory = dirname(this.path);
    const temporary = join(directory, `.${basename(this.path)}.${randomBytes(6).toString("hex")}.tmp`);
    try {
      const file = await open(temporary, "wx", 0o600);
      try {
        await file.writeFile(`${token}\n`, "utf8");
        await file.sync();
      } finally {
        await file.close();
      }
      await rename(temporary, this.path);
    } catch (error) {
      await rm(temporary, { force: true });
      throw error;
    }
    const folder = await open(directory, "r");
    try {
      await folder.sync();
    } finally {
      await folder.close();
    }
  }
}
