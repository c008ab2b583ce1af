// The portal page: asks for the appliance name, connects through flock,
// shows progress and the route (direct or relayed), lists the apps and opens
// them through the service worker. This page owns the tunnel, so it must stay
// open while apps are used (apps open in new tabs).

import { attachServiceWorker } from "./bridge-page.ts";
import { connect, type Appliance, type Progress } from "./peer.ts";
import { SignalError } from "./signal.ts";

const STEPS: Progress[] = ["signalling", "ice", "dtls", "control"];

function el<T extends HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (!e) throw new Error(`portal page is missing #${id}`);
  return e as T;
}

const form = el<HTMLFormElement>("connect");
const input = el<HTMLInputElement>("device");
const button = el<HTMLButtonElement>("go");
const status = el<HTMLParagraphElement>("status");
const routeEl = el<HTMLParagraphElement>("route");
const appsSection = el<HTMLElement>("apps-section");
const appsList = el<HTMLUListElement>("apps");

// flock serves this page, so signalling goes back to where it came from unless ?flock= says otherwise.
const params = new URLSearchParams(location.search);
const flockUrl = params.get("flock") ?? location.origin;
input.value = params.get("device") ?? localStorage.getItem("intrust.device") ?? "";

let current: Appliance | null = null;

function showStep(step: Progress | null, failed = false): void {
  const idx = step === null ? -1 : step === "ready" ? STEPS.length : STEPS.indexOf(step);
  document.querySelectorAll<HTMLLIElement>("#steps li").forEach((li, i) => {
    li.dataset.state = i < idx ? "done" : i === idx ? (failed ? "failed" : "active") : "";
  });
}

function setStatus(text: string, error = false): void {
  status.textContent = text;
  status.classList.toggle("error", error);
}

function explain(e: unknown): string {
  if (e instanceof SignalError) {
    switch (e.code) {
      case "invalid-name":
        return e.message;
      case "unknown-device":
        return "No appliance has that name. Check the label on the appliance.";
      case "offline":
        // flock says "unknown or offline" in one message, so the advice covers both.
        return "No appliance with that name is online. Check the name on the label, and that the appliance is plugged in and connected to the internet.";
      case "unreachable":
        return `The rendezvous service cannot be reached (${e.message}). Check your internet connection.`;
      default:
        return e.message;
    }
  }
  return e instanceof Error ? e.message : String(e);
}

function showApps(appliance: Appliance, scope: string | null): void {
  appsList.replaceChildren();
  for (const app of appliance.apps) {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = app;
    li.append(name);
    if (scope) {
      const a = document.createElement("a");
      a.href = `${scope}${encodeURIComponent(app)}/`;
      a.target = "_blank";
      a.rel = "noopener";
      a.textContent = "Open";
      a.setAttribute("aria-label", `Open ${app} in a new tab`);
      li.append(a);
    }
    appsList.append(li);
  }
  if (appliance.apps.length === 0) appsList.textContent = "No apps are installed.";
  appsSection.hidden = false;
}

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  current?.close();
  current = null;
  appsSection.hidden = true;
  routeEl.hidden = true;
  button.disabled = true;
  setStatus("Connecting…");
  let last: Progress = "signalling";
  try {
    const appliance = await connect(flockUrl, input.value, {
      onProgress: (step) => {
        last = step;
        showStep(step);
      },
    });
    current = appliance;
    localStorage.setItem("intrust.device", appliance.device);
    showStep("ready");
    setStatus(`Connected to ${appliance.device}.`);
    const route = await appliance.route();
    routeEl.textContent =
      route === "direct" ? "Direct connection (peer to peer)." : route === "relayed" ? "Relayed connection (through a TURN relay; still end-to-end encrypted)." : "";
    routeEl.hidden = route === "unknown";
    let scope: string | null = null;
    if ("serviceWorker" in navigator) {
      try {
        scope = await attachServiceWorker(appliance);
      } catch (e) {
        setStatus(`Connected, but apps cannot be opened here: ${explain(e)}`, true);
      }
    }
    showApps(appliance, scope);
    appliance.onclose = (reason) => {
      setStatus(`Disconnected: ${reason}`, true);
      showStep(null);
      appsSection.hidden = true;
    };
  } catch (e) {
    showStep(last, true);
    setStatus(explain(e), true);
  } finally {
    button.disabled = false;
  }
});
