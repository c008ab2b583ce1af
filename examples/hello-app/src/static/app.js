// The hello app's script: every URL is relative, so the page works at "/"
// and under the portal's ".../app/hello/" alike.
"use strict";
const $ = (id) => document.getElementById(id);
let shownClicks = null;

function show(c) {
  $("clicks").textContent = c.clicks;
  $("requests").textContent = c.requests;
  $("uptime").textContent = c.uptime_secs;
  if (c.clicks !== shownClicks) {
    shownClicks = c.clicks;
    $("picture").src = "picture.svg?n=" + c.clicks;
  }
}

// Polling uses XMLHttpRequest, the click uses fetch: both must work.
function poll() {
  const xhr = new XMLHttpRequest();
  xhr.open("GET", "api/counter");
  xhr.responseType = "json";
  xhr.onload = () => {
    if (xhr.status === 200 && xhr.response) {
      show(xhr.response);
      $("state").textContent = "live";
    } else {
      $("state").textContent = "error: HTTP " + xhr.status;
    }
  };
  xhr.onerror = () => { $("state").textContent = "error: the request failed"; };
  xhr.send();
}

$("click").addEventListener("click", async () => {
  try {
    const r = await fetch("api/counter", { method: "POST", cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    show(await r.json());
  } catch (e) {
    $("state").textContent = "error: " + e.message;
  }
});

// The counter is pushed over a WebSocket; a "ping" is echoed back.
function live() {
  const url = new URL("api/live", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url);
  ws.onopen = () => { $("ws").textContent = "open"; ws.send("ping"); };
  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string") return;
    if (ev.data.startsWith("echo:")) $("echo").textContent = ev.data;
    else show(JSON.parse(ev.data));
  };
  ws.onclose = () => { $("ws").textContent = "closed"; setTimeout(live, 2000); };
}

poll();
setInterval(poll, 1000);
live();
