import { startEmbedded } from "./runtime.ts";

/** `npm start`: embedded Rotor until Ctrl-C. */
const dataDir = process.env.ROTOR_DATA_DIR || ".rotor";
const port = Number(process.env.ROTOR_PORT || 8787);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`ROTOR_PORT must be a port number, got '${process.env.ROTOR_PORT}'`);
  process.exit(2);
}

try {
  const rotor = await startEmbedded({ dataDir, port, host: process.env.ROTOR_HOST || "127.0.0.1", dynamoEndpoint: process.env.ROTOR_DYNAMODB_ENDPOINT });
  console.log(`Rotor (embedded) listening on ${rotor.url} — data in ${dataDir}`);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) {
      // A second Ctrl-C while a stop hangs: leave at once (data on disk is consistent per write).
      console.error(`${signal} again: exiting without waiting`);
      process.exit(130);
    }
    stopping = true;
    console.log(`${signal}: stopping Rotor`);
    try {
      await rotor.stop();
    } catch (e) {
      console.error(`Rotor did not stop cleanly: ${(e as Error).message}`);
      process.exit(1);
    }
    process.exit(0);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
} catch (e) {
  const err = e as NodeJS.ErrnoException;
  console.error(err.code === "EADDRINUSE" ? `port ${port} is in use: set ROTOR_PORT to another port` : `Rotor failed to start: ${err.message}`);
  process.exit(1);
}
