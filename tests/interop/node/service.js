// A Node.js service as a user writes it: amqplib traced by @opentelemetry/instrumentation-amqplib,
// exporting OTLP/protobuf to the collector. Run by tests/interop/test_mixed_shop.py.
//   node service.js ENDPOINT AMQP_URL ROLE NAMES_JSON
// role "producer": publishes the events NAMES.publish lists ([exchange, routingKey, messageId]);
// role "consumer": settles each message of NAMES.queue by the word in its body
// (ack | nack | nack-requeue | reject | reject-requeue | close), then exits when NAMES.expect
// messages were handled.
"use strict";
const { context, propagation, trace } = require("@opentelemetry/api");
const { AsyncLocalStorageContextManager } = require("@opentelemetry/context-async-hooks");
const { W3CTraceContextPropagator } = require("@opentelemetry/core");
const { OTLPTraceExporter } = require("@opentelemetry/exporter-trace-otlp-proto");
const { registerInstrumentations } = require("@opentelemetry/instrumentation");
const { AmqplibInstrumentation } = require("@opentelemetry/instrumentation-amqplib");
const { resourceFromAttributes } = require("@opentelemetry/resources");
const { BatchSpanProcessor, TracerProvider } = require("@opentelemetry/sdk-trace");

const [endpoint, amqpUrl, role, namesJson] = process.argv.slice(2);
const names = JSON.parse(namesJson);
const provider = new TracerProvider({
  resource: resourceFromAttributes({ "service.name": `node-${role}` }),
  spanProcessors: [
    new BatchSpanProcessor({ exporter: new OTLPTraceExporter({ url: `${endpoint}/v1/traces` }), scheduledDelayMillis: 100 }),
  ],
});
trace.setGlobalTracerProvider(provider);
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
propagation.setGlobalPropagator(new W3CTraceContextPropagator());
registerInstrumentations({ instrumentations: [new AmqplibInstrumentation()] });
const amqp = require("amqplib"); // after the instrumentation, as its README says

async function produce(connection) {
  const channel = await connection.createConfirmChannel();
  for (const [exchange, routingKey, messageId] of names.publish) {
    const options = messageId ? { messageId } : {};
    await new Promise((resolve, reject) =>
      channel.publish(exchange, routingKey, Buffer.from(messageId || "x"), options, (err) => (err ? reject(err) : resolve())),
    );
  }
  await channel.close();
}

async function consume(connection) {
  let handled = 0;
  let finish;
  const done = new Promise((resolve) => (finish = resolve));
  const open = async () => {
    const channel = await connection.createChannel();
    await channel.prefetch(1);
    await channel.consume(names.queue, async (msg) => {
      const word = msg.content.toString();
      if (word === "close" && !msg.fields.redelivered) {
        await channel.close(); // mid-message: the broker requeues it, a new channel takes it again
        await open();
        return;
      }
      if (word === "ack" || word === "close") channel.ack(msg);
      else if (word === "nack") channel.nack(msg, false, false);
      else if (word === "nack-requeue") (msg.fields.redelivered ? channel.ack(msg) : channel.nack(msg, false, true));
      else if (word === "reject") channel.reject(msg, false);
      else if (word === "reject-requeue") (msg.fields.redelivered ? channel.ack(msg) : channel.reject(msg, true));
      handled += 1;
      if (handled >= names.expect) finish();
    });
  };
  await open();
  await done;
}

(async () => {
  const connection = await amqp.connect(amqpUrl);
  if (role === "producer") await produce(connection);
  else await consume(connection);
  await connection.close();
  await provider.forceFlush();
  await provider.shutdown();
  console.log(role, "done");
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
