import { InProcessTransport } from "../../src/transport/in-process-transport.ts";
import { describeTransportContract } from "../../src/testing/contracts/transport-contract.ts";

describeTransportContract("InProcessTransport", async ({ handlers, slots, labels }) => {
  const transport = new InProcessTransport({ handlers, slots, labels });
  return { transport, dispose: () => transport.close() };
});
