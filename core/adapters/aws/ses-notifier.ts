import { SendEmailCommand, type SESv2Client } from "@aws-sdk/client-sesv2";
import type { Notifier } from "../../rotation/model.ts";

/** Cloud email: SES v2 SendEmail from Rotor's verified sender identity. */
export class SesNotifier implements Notifier {
  constructor(private readonly client: SESv2Client, private readonly from: string) {}

  async send(message: { to: string; subject: string; text: string }): Promise<void> {
    await this.client.send(
      new SendEmailCommand({
        FromEmailAddress: this.from,
        Destination: { ToAddresses: [message.to] },
        Content: {
          Simple: {
            Subject: { Data: message.subject, Charset: "UTF-8" },
            Body: { Text: { Data: message.text, Charset: "UTF-8" } },
          },
        },
      }),
    );
  }
}
