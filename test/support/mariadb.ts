import { existsSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { chown, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import mysql from "mysql2/promise";
import { run, serviceUser, startOnFreePort, supervise, waitUntilReady, type DbServer, type Supervised } from "./postgres.ts";

/**
 * A real MariaDB (Debian's mariadb-server package) in a fresh temp dir on a free port.
 * `--no-defaults` keeps /etc/mysql out of it. As root, mariadbd drops to the `mysql` user
 * itself (`--user=mysql`), so only the temp dir needs chowning.
 */

function binary(...names: string[]): string {
  for (const name of names) {
    for (const dir of (process.env.PATH ?? "").split(":").concat(["/usr/sbin", "/usr/bin"])) {
      if (dir && existsSync(join(dir, name))) return join(dir, name);
    }
  }
  throw new Error(`none of ${names.join(", ")} found: install mariadb-server (apt-get install -y mariadb-server)`);
}

export async function startMariaDb(): Promise<DbServer> {
  const installDb = binary("mariadb-install-db", "mysql_install_db");
  const mariadbd = binary("mariadbd", "mysqld");
  const user = serviceUser("mysql");
  const asUser = user.uid !== undefined ? ["--user=mysql"] : [];
  const dir = await mkdtemp(join(tmpdir(), "rotor-mariadb-"));
  const data = join(dir, "data");
  const adminUser = "root";
  const adminPassword = randomBytes(12).toString("hex");
  const database = "app";
  let server: Supervised | undefined;
  try {
    if (user.uid !== undefined) await chown(dir, user.uid, user.gid!);
    // --skip-name-resolve: accounts are keyed by IP (root@127.0.0.1), never by this machine's hostname.
    // The bootstrap has been seen to segfault now and then (once in a few dozen starts here): retry on a clean datadir.
    for (let attempt = 1; ; attempt++) {
      try {
        await run(
          installDb,
          ["--no-defaults", `--datadir=${data}`, `--tmpdir=${dir}`, ...asUser, "--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"],
          { cwd: dir },
        );
        break;
      } catch (e) {
        await rm(data, { recursive: true, force: true });
        if (attempt >= 3) throw e;
      }
    }

    const connect = (port: number, u: string, p: string, db?: string) =>
      mysql.createConnection({ host: "127.0.0.1", port, user: u, password: p, database: db, connectTimeout: 5_000 });
    const started = await startOnFreePort(
      (port) =>
        supervise(
          mariadbd,
          [
            "--no-defaults", // must come first
            `--datadir=${data}`,
            `--tmpdir=${dir}`,
            `--socket=${join(dir, "mysqld.sock")}`,
            `--pid-file=${join(dir, "mysqld.pid")}`,
            `--port=${port}`,
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=32M",
            "--innodb-flush-log-at-trx-commit=0",
            ...asUser,
          ],
          { cwd: dir, dir, stopSignal: "SIGTERM" },
        ),
      (port, s) =>
        waitUntilReady(s, async () => {
          const c = await connect(port, "root", ""); // passwordless until we set one below
          await c.end();
        }, "mariadbd"),
    );
    server = started.server;
    const port = started.port;

    const setup = await connect(port, "root", "");
    try {
      // Entries keyed by this machine's hostname are ignored under --skip-name-resolve (and cannot be altered).
      const [roots] = await setup.query<mysql.RowDataPacket[]>(
        "SELECT User, Host FROM mysql.user WHERE User IN ('root', '') AND Host IN ('localhost', '127.0.0.1', '::1', '%')",
      );
      for (const { User, Host } of roots) {
        // Anonymous accounts would shadow 'name'@'%' for local logins: remove them.
        if (User === "") await setup.query(mysql.format("DROP USER ?@?", [User, Host]));
        else await setup.query(mysql.format("ALTER USER ?@? IDENTIFIED BY ?", [User, Host, adminPassword]));
      }
      await setup.query(`CREATE DATABASE ${database}`);
    } finally {
      await setup.end();
    }

    const withConnection = async <T>(u: string, p: string, fn: (c: mysql.Connection) => Promise<T>) => {
      const c = await connect(port, u, p, database);
      c.on("error", () => {});
      try {
        return await fn(c);
      } finally {
        await c.end().catch(() => c.destroy());
      }
    };
    const query = <T>(sql: string, params?: unknown[]) =>
      withConnection(adminUser, adminPassword, async (c) => (await c.query(params ? mysql.format(sql, params as mysql.SqlValue[]) : sql))[0] as T[]);

    return {
      host: "127.0.0.1",
      port,
      database,
      adminUser,
      adminPassword,
      query,
      async createLoginUser(username, password) {
        await query("CREATE USER ?@'%' IDENTIFIED BY ?", [username, password]);
        await query(`GRANT SELECT ON ${database}.* TO ?@'%'`, [username]);
      },
      async canLogin(username, password) {
        try {
          await withConnection(username, password, (c) => c.query("SELECT 1"));
          return true;
        } catch (e) {
          if ((e as { errno?: number }).errno === 1045) return false;
          throw e;
        }
      },
      async stop() {
        await server?.stop();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await server?.stop();
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}
