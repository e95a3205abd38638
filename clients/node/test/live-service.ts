/**
 * A real vault-service for the client's tests: `vault-service emulator` (a local Antom) and
 * `vault-service serve` on SQLite, as child processes on free 127.0.0.1 ports, with keys made
 * for the run in a temporary folder. `serve` keeps its ports across restarts, so a client's
 * channel finds it again (and the emulator's notifications reach the same webhook).
 *
 * The service comes from the repository's virtualenv (`.venv/bin/vault-service`, made by
 * `scripts/bootstrap`), or from VAULT_SERVICE_BIN.
 */
import { type ChildProcess, execFile, spawn, type StdioOptions } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";

const REPOSITORY = resolve(__dirname, "..", "..", "..", "..");
const SERVICE_BIN = process.env["VAULT_SERVICE_BIN"] ?? join(REPOSITORY, ".venv", "bin", "vault-service");
const CLIENT_ID = "SANDBOX_VAULTNODE0001";
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;

/** The caller the service knows, with the bearer token it accepts. */
export const CALLER = "node-client-test";

export class LiveService {
  private serveProcess: ChildProcess | undefined;

  private constructor(
    private readonly folder: string,
    private readonly emulatorProcess: ChildProcess,
    /** The emulator's base URL (its buyer endpoint, its fault switches). */
    readonly emulatorUrl: string,
    /** `127.0.0.1:PORT` of the gRPC service, the same across restarts. */
    readonly address: string,
    /** The bearer token of {@link CALLER}. */
    readonly token: string,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  static async start(): Promise<LiveService> {
    const folder = await mkdtemp(join(tmpdir(), "vault-node-client-"));
    const emulator = spawnChild(
      ["emulator", "--dev-dir", folder, "--listen", "127.0.0.1:0", "--client-id", CLIENT_ID, "--time-scale", "0.001", "--log-level", "WARNING"],
      process.env,
      ["ignore", "pipe", "inherit"],
    );
    let service: LiveService | undefined;
    try {
      const listening = await waitForLine(emulator, "stdout", (line) => line.match(/^listening on (\S+)$/)?.[1]);
      const dataKeyFile = join(folder, "data-keys.json");
      await promisify(execFile)(SERVICE_BIN, ["add-data-key", dataKeyFile]);
      const token = randomBytes(24).toString("base64url");
      const tokensFile = join(folder, "callers.json");
      const digest = createHash("sha256").update(token).digest("hex");
      await writeFile(tokensFile, JSON.stringify({ callers: [{ name: CALLER, token_sha256: digest, scopes: ["vault"] }] }));
      const [grpcPort, httpPort] = [await freePort(), await freePort()];
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        VAULT_GRPC_LISTEN: `127.0.0.1:${grpcPort}`,
        VAULT_HTTP_LISTEN: `127.0.0.1:${httpPort}`,
        VAULT_ADMIN_LISTEN: "127.0.0.1:0",
        VAULT_DATABASE_URL: `sqlite:///${join(folder, "vault.db")}`,
        VAULT_AUTO_MIGRATE: "1",
        VAULT_DATA_KEY_FILE: dataKeyFile,
        VAULT_ANTOM_BASE_URL: listening,
        VAULT_ANTOM_CLIENT_ID: CLIENT_ID,
        VAULT_MERCHANT_PRIVATE_KEY_FILE: join(folder, "merchant-private-key.pem"),
        VAULT_ANTOM_PUBLIC_KEY_FILE: join(folder, "antom-public-key.pem"),
        VAULT_AUTH_TOKENS_FILE: tokensFile,
        VAULT_ANTOM_TIMEOUT: "2",
        VAULT_CHECKPOINT_INTERVAL: "0.2",
        VAULT_SHUTDOWN_GRACE: "1",
      };
      service = new LiveService(folder, emulator, listening, `127.0.0.1:${grpcPort}`, token, env);
      await service.startServe();
      return service;
    } catch (error) {
      await (service?.stop() ?? stopProcess(emulator, "SIGTERM"));
      await rm(folder, { recursive: true, force: true });
      throw error;
    }
  }

  /** Stops `serve` with `signal` (SIGKILL: no drain at all) and starts it again on the same
   * ports and database. */
  async restart(signal: "SIGKILL" | "SIGTERM"): Promise<void> {
    await this.stopServe(signal);
    await this.startServe();
  }

  /** Stops both processes and removes the folder. */
  async stop(): Promise<void> {
    await this.stopServe("SIGTERM");
    await stopProcess(this.emulatorProcess, "SIGTERM");
    await rm(this.folder, { recursive: true, force: true });
  }

  /** What the buyer does in Antom's card form (the emulator's buyer endpoint). */
  async buyerSubmits(sessionData: string, card = "4111111111111111"): Promise<void> {
    const answer = await fetch(`${this.emulatorUrl}/emulator/buyer/submit`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ sessionData, cardNo: card, expiryMonth: "12", expiryYear: "39", cvv: "737", cardholderName: "Ada Lovelace" }),
    });
    if (answer.status !== 200) {
      throw new Error(`buyer submit: HTTP ${answer.status}: ${await answer.text()}`);
    }
  }

  /** Changes the emulator's fault plan (see `vault-service emulator --help`). */
  async setFaults(faults: Record<string, number>): Promise<void> {
    const answer = await fetch(`${this.emulatorUrl}/emulator/faults`, { method: "PUT", body: JSON.stringify(faults) });
    if (answer.status !== 200) {
      throw new Error(`emulator faults: HTTP ${answer.status}: ${await answer.text()}`);
    }
  }

  private async startServe(): Promise<void> {
    const serve = spawnChild(["serve"], this.env, ["ignore", "ignore", "pipe"]);
    this.serveProcess = serve;
    await waitForLine(serve, "stderr", (line) => (line.includes('"vault-service serving"') ? line : undefined));
  }

  private async stopServe(signal: NodeJS.Signals): Promise<void> {
    if (this.serveProcess !== undefined) {
      await stopProcess(this.serveProcess, signal);
      this.serveProcess = undefined;
    }
  }
}

/** Children still running; killed when this test process exits, however it exits. */
const children = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of children) {
    child.kill("SIGKILL");
  }
});

function spawnChild(args: string[], env: NodeJS.ProcessEnv, stdio: StdioOptions): ChildProcess {
  const child = spawn(SERVICE_BIN, args, { env, stdio });
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

/** Reads `stream` of `child` line by line until `match` returns a value; keeps draining it after. */
function waitForLine(child: ChildProcess, stream: "stdout" | "stderr", match: (line: string) => string | undefined): Promise<string> {
  const source = child[stream];
  if (source === null) {
    throw new Error(`${stream} of ${child.spawnfile} is not piped`);
  }
  return new Promise<string>((resolvePromise, reject) => {
    const lines: string[] = [];
    const timer = setTimeout(() => fail(new Error(`timed out waiting for ${child.spawnargs.join(" ")}:\n${lines.join("\n")}`)), START_TIMEOUT_MS);
    const onExit = (code: number | null): void => fail(new Error(`${child.spawnfile} exited (${code}) before it was ready:\n${lines.join("\n")}`));
    const fail = (error: Error): void => {
      clearTimeout(timer);
      child.off("exit", onExit);
      reject(error);
    };
    child.once("exit", onExit);
    let found = false;
    createInterface({ input: source }).on("line", (line) => {
      if (found) {
        return;
      }
      lines.push(line);
      const value = match(line);
      if (value !== undefined) {
        found = true;
        clearTimeout(timer);
        child.off("exit", onExit);
        resolvePromise(value);
      }
    });
  });
}

async function stopProcess(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return;
  }
  const exited = new Promise<void>((resolvePromise) => child.once("exit", () => resolvePromise()));
  child.kill(signal);
  const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
}

/** A port free on 127.0.0.1 right now. */
function freePort(): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address !== null ? resolvePromise(address.port) : reject(new Error("no port"))));
    });
  });
}
