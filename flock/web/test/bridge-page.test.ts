import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { whenActivated } from "../src/bridge-page.ts";
import { ManualTimers, tick } from "./fakes.ts";

class FakeWorker extends EventTarget {
  constructor(public state: string) {
    super();
  }
  to(state: string): void {
    this.state = state;
    this.dispatchEvent(new Event("statechange"));
  }
}

/** A ServiceWorkerRegistration whose worker the test moves through its states. */
class FakeRegistration extends EventTarget {
  readonly scope = "http://127.0.0.1/app/";
  active: FakeWorker | null = null;
  waiting: FakeWorker | null = null;
  installing: FakeWorker | null = null;
}

type Outcome = { worker?: FakeWorker; error?: Error };

function watch(p: Promise<FakeWorker>): Outcome {
  const out: Outcome = {};
  p.then((w) => (out.worker = w), (e: Error) => (out.error = e));
  return out;
}

describe("whenActivated", () => {
  it("resolves at once when the worker is already active", async () => {
    const reg = new FakeRegistration();
    reg.active = new FakeWorker("activated");
    const timers = new ManualTimers();
    const out = watch(whenActivated(reg, 10_000, timers));
    await tick();
    assert.equal(out.worker, reg.active);
    assert.equal(timers.pending.size, 0, "the timeout is cleared");
  });

  it("follows a first install through waiting to activated", async () => {
    const reg = new FakeRegistration();
    const w = new FakeWorker("installing");
    reg.installing = w;
    const timers = new ManualTimers();
    const out = watch(whenActivated(reg, 10_000, timers));
    await tick();
    assert.deepEqual(out, {});
    reg.installing = null;
    reg.waiting = w;
    w.to("installed");
    await tick();
    assert.deepEqual(out, {});
    reg.waiting = null;
    reg.active = w;
    w.to("activating");
    await tick();
    assert.deepEqual(out, {}, "activating is not yet activated");
    w.to("activated");
    await tick();
    assert.equal(out.worker, w);
    assert.equal(timers.pending.size, 0);
  });

  it("waits for an update that is found later", async () => {
    const reg = new FakeRegistration();
    const timers = new ManualTimers();
    const out = watch(whenActivated(reg, 10_000, timers));
    const w = new FakeWorker("installing");
    reg.installing = w;
    reg.dispatchEvent(new Event("updatefound"));
    reg.installing = null;
    reg.active = w;
    w.to("activated");
    await tick();
    assert.equal(out.worker, w);
  });

  it("fails clearly when the worker cannot install", async () => {
    const reg = new FakeRegistration();
    const w = new FakeWorker("installing");
    reg.installing = w;
    const out = watch(whenActivated(reg, 10_000, new ManualTimers()));
    reg.installing = null;
    w.to("redundant");
    await tick();
    assert.match(out.error?.message ?? "", /failed to install/);
  });

  it("times out with the worker's state", async () => {
    const reg = new FakeRegistration();
    const w = new FakeWorker("installed");
    reg.waiting = w;
    const timers = new ManualTimers();
    const out = watch(whenActivated(reg, 5_000, timers));
    await tick();
    assert.deepEqual(out, {});
    assert.equal([...timers.pending.values()][0]?.ms, 5_000);
    timers.fireAll();
    await tick();
    assert.match(out.error?.message ?? "", /did not become active within 5 s \(it is still "installed"\)/);
  });
});
