import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { classifyRoute } from "../src/peer.ts";

type Stat = Record<string, unknown> & { id: string; type: string };

/** A stats report shaped like Chromium's: a map from id to stat (RTCStatsReport is map-like). */
function chromiumReport(localType: string, remoteType: string): Map<string, Stat> {
  const stats: Stat[] = [
    { id: "T01", type: "transport", selectedCandidatePairId: "CP1" },
    { id: "CP0", type: "candidate-pair", localCandidateId: "L0", remoteCandidateId: "R0", state: "failed" },
    { id: "CP1", type: "candidate-pair", localCandidateId: "L1", remoteCandidateId: "R1", state: "succeeded", nominated: true },
    { id: "L0", type: "local-candidate", candidateType: "relay" },
    { id: "R0", type: "remote-candidate", candidateType: "relay" },
    { id: "L1", type: "local-candidate", candidateType: localType },
    { id: "R1", type: "remote-candidate", candidateType: remoteType },
  ];
  return new Map(stats.map((s) => [s.id, s]));
}

describe("classifyRoute", () => {
  it("reads a map-like report (RTCStatsReport) through the selected pair", () => {
    assert.equal(classifyRoute(chromiumReport("host", "prflx")), "direct");
    assert.equal(classifyRoute(chromiumReport("srflx", "host")), "direct");
    assert.equal(classifyRoute(chromiumReport("relay", "host")), "relayed");
    assert.equal(classifyRoute(chromiumReport("host", "relay")), "relayed");
  });

  it("iterates a report's entries, not [id, stat] pairs as stats", () => {
    // An object that only iterates (like RTCStatsReport without forEach): entries are [id, stat].
    const map = chromiumReport("host", "host");
    const entriesOnly: Iterable<[string, Stat]> = { [Symbol.iterator]: () => map.entries() };
    assert.equal(classifyRoute(entriesOnly), "direct");
  });

  it("accepts a list of stats", () => {
    assert.equal(classifyRoute([...chromiumReport("relay", "srflx").values()]), "relayed");
  });

  it("uses the pair Firefox marks selected when there are no transport stats", () => {
    const map = chromiumReport("host", "host");
    map.delete("T01");
    map.set("CP1", { ...map.get("CP1")!, selected: true });
    assert.equal(classifyRoute(map), "direct");
  });

  it("is unknown without a selected pair or its candidates", () => {
    assert.equal(classifyRoute(new Map()), "unknown");
    const map = chromiumReport("host", "host");
    map.delete("R1");
    assert.equal(classifyRoute(map), "unknown");
  });
});
