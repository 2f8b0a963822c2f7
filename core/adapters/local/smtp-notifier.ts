import nodemailer from "nodemailer";
import type { Notifier } from "../../rotation/model.ts";

type Message = { to: string; subject: string; text: string };

/** Embedded email: SMTP through nodemailer, from a URL such as `smtp://127.0.0.1:2525` (ROTOR_SMTP_URL). */
export class SmtpNotifier implements Notifier {
  private readonly transport: nodemailer.Transporter;
  constructor(url: string, private readonly from: string) {
    this.transport = nodemailer.createTransport(url);
  }

  async send(message: Message): Promise<void> {
    await this.transport.sendMail({ from: this.from, to: message.to, subject: message.subject, text: message.text });
  }

  close() {
    this.transport.close();
  }
}

/** No SMTP configured: say who would have been emailed and about what; never the body. */
export class LogNotifier implements Notifier {
  constructor(private readonly log: (line: string) => void = (line) => console.log(line)) {}

  async send(message: Message): Promise<void> {
    this.log(`would email ${message.to}: ${message.subject}`);
  }
}

/** SMTP when `ROTOR_SMTP_URL` is set, otherwise the log. */
export function notifierFromEnv(env: NodeJS.ProcessEnv, from = env.ROTOR_SMTP_FROM ?? "rotor@localhost"): Notifier {
  return env.ROTOR_SMTP_URL ? new SmtpNotifier(env.ROTOR_SMTP_URL, from) : new LogNotifier();
}
