/// The demo page `parley dev` serves at `/`: calls the API with the microphone, plays what comes
/// back, and shows the connection's state, setup timeline and live stats. It gets a client secret
/// from `/dev/client_secret` (as an app's backend would mint one), or takes `?client_secret=ek_…`.
/// `?autostart=1` calls at once (the headless browser tests use it); `window.parley` exposes the
/// state to them.
enum DemoPage {
    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Parley</title>
<style>
  :root { --bg:#0f1115; --panel:#171a21; --line:#262b36; --text:#e6e8ee; --muted:#8b93a7; --accent:#5b8cff; --ok:#3ecf8e; --bad:#ff6b6b; }
  * { box-sizing: border-box; }
  body { margin:0; font:15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; background:var(--bg); color:var(--text); }
  main { max-width: 760px; margin: 40px auto; padding: 0 20px; }
  h1 { font-size: 22px; margin: 0 0 4px; } .sub { color: var(--muted); margin: 0 0 24px; }
  .panel { background: var(--panel); border: 1px solid var(--line); border-radius: 10px; padding: 18px; margin-bottom: 16px; }
  button { font: inherit; border: 0; border-radius: 8px; padding: 10px 18px; cursor: pointer; background: var(--accent); color: white; }
  button.secondary { background: var(--line); color: var(--text); } button:disabled { opacity: .5; cursor: default; }
  .row { display: flex; gap: 12px; align-items: center; flex-wrap: wrap; }
  .state { font-weight: 600; } .state.connected { color: var(--ok); } .state.failed { color: var(--bad); } .state.closed { color: var(--muted); }
  table { width: 100%; border-collapse: collapse; } td { padding: 4px 0; border-bottom: 1px solid var(--line); }
  td:last-child { text-align: right; font-variant-numeric: tabular-nums; color: var(--muted); }
  .stats { display: grid; grid-template-columns: repeat(4, 1fr); gap: 12px; }
  .stat { background: var(--bg); border-radius: 8px; padding: 10px; } .stat b { display:block; font-size: 20px; font-variant-numeric: tabular-nums; }
  .stat span { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
  #error { color: var(--bad); } #hint { color: var(--muted); }
  .reason { display: none; margin-top: 12px; padding: 10px 12px; border-radius: 8px; background: #2a1518; color: #ffd1d1; border: 1px solid #5c2a31; }
  .reason.shown { display: block; } .reason code { color: #fff; }
  select { font: inherit; padding: 9px; border-radius: 8px; border: 1px solid var(--line); background: var(--bg); color: var(--text); }
  #talk.held { background: var(--ok); }
  .charts { display: grid; grid-template-columns: repeat(4, 1fr); gap: 12px; margin-top: 12px; }
  .chart { background: var(--bg); border-radius: 8px; padding: 6px 8px; } .chart span { color: var(--muted); font-size: 11px; text-transform: uppercase; }
  .chart canvas { width: 100%; height: 44px; display: block; } .chart .scale { float: right; text-transform: none; }
</style>
</head>
<body>
<main>
  <h1>Parley</h1>
  <p class="sub">WebRTC edge for voice AI — call an agent with your microphone: the one this server runs
  (<code>--agent</code>), or a built-in one: <b>echo</b> returns what you say at once, <b>parrot</b> waits
  until you stop and says it back (talk over it to interrupt).
  Agent events arrive on the <code>oai-events</code> data channel.</p>
  <div class="panel row">
    <select id="agent" title="agent"><option value="">server's agent</option><option value="echo">echo</option><option value="parrot">parrot</option></select>
    <button id="call">Call</button>
    <button id="hangup" class="secondary" disabled>Hang up</button>
    <button id="talk" class="secondary" disabled title="hold to talk while the open mic is off">Hold to talk</button>
    <label><input type="checkbox" id="open-mic" checked> open mic</label>
    <span>State: <span id="state" class="state">idle</span></span>
    <span id="error"></span>
    <span id="hint"></span>
  </div>
  <div id="reason" class="reason panel"></div>
  <div class="panel">
    <table id="timeline">
      <tr data-step="offer"><td>Offer created</td><td id="t-offer">—</td></tr>
      <tr data-step="answer"><td>Answer received</td><td id="t-answer">—</td></tr>
      <tr data-step="ice"><td>ICE connected</td><td id="t-ice">—</td></tr>
      <tr data-step="dtls"><td>DTLS connected</td><td id="t-dtls">—</td></tr>
      <tr data-step="audio"><td>First audio from the agent</td><td id="t-audio">—</td></tr>
      <tr data-step="channel"><td>oai-events open</td><td id="t-channel">—</td></tr>
    </table>
  </div>
  <div class="panel stats">
    <div class="stat"><span>Round trip</span><b id="s-rtt">—</b></div>
    <div class="stat"><span>Jitter</span><b id="s-jitter">—</b></div>
    <div class="stat"><span>Packets lost</span><b id="s-lost">—</b></div>
    <div class="stat"><span>Packets received</span><b id="s-received">—</b></div>
  </div>
  <div class="panel charts">
    <div class="chart"><span>Round trip (ms)</span><span class="scale" id="m-rtt"></span><canvas id="c-rtt" width="160" height="44"></canvas></div>
    <div class="chart"><span>Jitter (ms)</span><span class="scale" id="m-jitter"></span><canvas id="c-jitter" width="160" height="44"></canvas></div>
    <div class="chart"><span>Lost (packets)</span><span class="scale" id="m-lost"></span><canvas id="c-lost" width="160" height="44"></canvas></div>
    <div class="chart"><span>Agent audio level</span><span class="scale" id="m-level"></span><canvas id="c-level" width="160" height="44"></canvas></div>
  </div>
  <div class="panel">
    <div class="row" style="justify-content: space-between"><b>oai-events</b> <span id="channel-state" class="state">closed</span></div>
    <div class="row" style="margin-top: 8px">
      <input id="event-text" style="flex:1; font: inherit; padding: 8px; border-radius: 8px; border: 1px solid var(--line); background: var(--bg); color: var(--text)"
             value='{"type":"session.update"}'>
      <button id="event-send" class="secondary" disabled>Send</button>
    </div>
    <table id="events" style="margin-top: 8px"></table>
  </div>
  <audio id="remote" autoplay></audio>
</main>
<script>
const $ = (id) => document.getElementById(id);
const parley = window.parley = { state: "idle", callId: null, timings: {}, stats: {}, error: null,
                                  channelState: "closed", messages: [], events: [],
                                  series: { rtt: [], jitter: [], lost: [], level: [] }, agent: null };
const query = new URLSearchParams(location.search);
if (query.get("agent")) $("agent").value = query.get("agent");
let micTrack = null, holding = false;
function updateMic() { if (micTrack) micTrack.enabled = $("open-mic").checked || holding; }

// Sparklines of the last 30 s (a sample every 250 ms), scaled to their maximum, shown at the top
// right. A sample with no data (nothing measured yet) is a gap, not a zero.
function chart(name, value) {
  const series = parley.series[name];
  series.push(value ?? null);
  if (series.length > 120) series.shift();
  const canvas = $("c-" + name), g = canvas.getContext("2d");
  const known = series.filter((v) => v !== null);
  const max = Math.max(1e-6, ...known);
  $("m-" + name).textContent = known.length ? "max " + (name === "level" ? max.toFixed(2) : max < 10 ? max.toFixed(1) : Math.round(max)) : "no data";
  g.clearRect(0, 0, canvas.width, canvas.height);
  g.strokeStyle = name === "level" ? "#3ecf8e" : "#5b8cff"; g.lineWidth = 1.5; g.beginPath();
  let drawing = false;
  series.forEach((v, i) => {
    if (v === null) { drawing = false; return; }
    const x = (i / 119) * (canvas.width - 2) + 1, y = canvas.height - 2 - (v / max) * (canvas.height - 6);
    drawing ? g.lineTo(x, y) : g.moveTo(x, y);
    drawing = true;
  });
  g.stroke();
}

// Why a call did not come up or went down, in words, with what to do (parley.reason for tests).
function showReason(html) {
  parley.reason = html.replace(/<[^>]+>/g, "");
  $("reason").innerHTML = html; $("reason").classList.add("shown");
}
function clearReason() { parley.reason = null; $("reason").innerHTML = ""; $("reason").classList.remove("shown"); }

function agentHint() {
  const agent = $("agent").value;
  $("hint").textContent = agent === "parrot" ? "parrot: speak, then pause — it says it back" :
    agent === "echo" ? "echo: you hear yourself at once" : "";
}
$("agent").onchange = agentHint;
agentHint();

// Every call request carries the client secret the call was made with: it owns the call.
function authorization() { return parley.secret ? { Authorization: "Bearer " + parley.secret } : {}; }

// While the call is not up, ask the server what it saw, and explain the usual causes.
let diagnoseTimer = null;
function diagnose(candidate) {
  clearInterval(diagnoseTimer);
  const since = performance.now();
  diagnoseTimer = setInterval(async () => {
    if (!pc || ["connected", "closed"].includes(pc.connectionState) || !parley.callId) return clearInterval(diagnoseTimer);
    const waited = performance.now() - since;
    let call = null;
    try {
      const response = await fetch("/v1/realtime/calls/" + parley.callId, { headers: authorization() });
      call = response.ok ? await response.json() : null;
    } catch (_) { /* the server is gone: said below */ }
    if (!call) {
      showReason("The call ended on the server before it connected (see its log for the reason).");
      return clearInterval(diagnoseTimer);
    }
    if (waited < 3000) return;
    if (call.checksAnswered === 0) {
      showReason("No connectivity check from this browser reached Parley at <code>" + candidate + "</code>, the address " +
        "its answer advertises. If Parley runs on another machine or in a container, start it with " +
        "<code>--public-host 0.0.0.0 --http-host 0.0.0.0</code> (it then advertises the machine's addresses) or " +
        "<code>--advertise HOST:PORT</code> with an address this browser can reach, and let UDP to that port through.");
    } else {
      showReason("Parley answered this browser's checks at <code>" + candidate + "</code>, but the browser has not answered " +
        "Parley's own checks or finished DTLS. A firewall letting UDP in only one way, or a relay in front of Parley " +
        "that does not forward the answers, would do this.");
    }
  }, 1000);
}
let channel = null, waiting = [];

function logEvent(direction, data) {
  const text = typeof data === "string" ? data : "(" + (data.byteLength ?? data.size) + " bytes binary)";
  const row = document.createElement("tr");
  row.innerHTML = "<td></td><td></td>";
  row.children[0].textContent = (direction === "in" ? "← " : "→ ") + (text.length > 80 ? text.slice(0, 80) + "…" : text);
  row.children[1].textContent = new Date().toLocaleTimeString();
  const table = $("events");
  table.insertBefore(row, table.firstChild);
  while (table.children.length > 8) table.removeChild(table.lastChild);
}

function openChannel() {
  channel = pc.createDataChannel("oai-events");
  channel.binaryType = "arraybuffer";
  channel.onopen = () => {
    mark("channel", "t-channel");
    parley.channelState = "open"; $("channel-state").textContent = "open"; $("channel-state").className = "state connected";
    $("event-send").disabled = false;
  };
  channel.onclose = () => {
    parley.channelState = "closed"; $("channel-state").textContent = "closed"; $("channel-state").className = "state closed";
    $("event-send").disabled = true;
  };
  channel.onmessage = (event) => {
    parley.messages.push(typeof event.data === "string" ? event.data.length : event.data.byteLength);
    if (typeof event.data === "string") {
      try {
        const parsed = JSON.parse(event.data);
        if (parsed && parsed.type) parley.events.push({ at: Math.round(performance.now() - started), ...parsed });
        if (parley.events.length > 200) parley.events.shift();
        if (parsed && parsed.type === "error" && parsed.error) {
          const kind = parsed.error.type === "agent_unavailable" ? "The agent could not be reached" :
            parsed.error.type === "agent_disconnected" ? "The agent went away" : "The server reported an error";
          showReason(kind + ": " + (parsed.error.message || parsed.error.type) + ". The call ends.");
          parley.error = parsed.error.type; $("error").textContent = parsed.error.type;
          // The server ends the call once this is acknowledged: end it here too, and Call works again.
          setTimeout(() => { if (pc) hangup(false).then(() => setState("failed")); }, 300);
        }
      } catch (_) { /* not JSON: shown in the log only */ }
    }
    logEvent("in", event.data);
    const resolve = waiting.shift();
    if (resolve) resolve(event.data);
  };
  parley.channel = channel;
}

function sendEvent(data) {
  logEvent("out", data);
  channel.send(data);
  return new Promise((resolve) => waiting.push(resolve));
}

// Sends one message per size (binary, a known pattern) and checks each echo byte for byte.
parley.echoTest = async function (sizes) {
  const results = [];
  for (const size of sizes) {
    const bytes = new Uint8Array(size);
    for (let i = 0; i < size; i++) bytes[i] = (i * 31 + size) & 0xff;
    const echoed = new Uint8Array(await sendEvent(bytes.buffer));
    results.push({ size, ok: echoed.length === size && echoed.every((b, i) => b === bytes[i]) });
  }
  const text = JSON.stringify({ type: "session.update", session: { instructions: "é 😀" } });
  results.push({ size: "text", ok: (await sendEvent(text)) === text });
  return results;
};
let pc = null, statsTimer = null, started = 0;

parley.elapsed = () => Math.round(performance.now() - started);
// Each step's time since Call; the rows keep the order in which the steps happened.
function mark(name, cell) {
  if (parley.timings[name] !== undefined) return;
  parley.timings[name] = Math.round(performance.now() - started);
  $(cell).textContent = parley.timings[name] + " ms";
  const table = $("timeline"), rows = Array.from(table.rows);
  rows.sort((a, b) => (parley.timings[a.dataset.step] ?? Infinity) - (parley.timings[b.dataset.step] ?? Infinity));
  rows.forEach((row) => table.appendChild(row));
}
function setState(state) {
  parley.state = state;
  $("state").textContent = state;
  $("state").className = "state " + state;
}

async function call() {
  $("call").disabled = true; $("error").textContent = ""; parley.error = null; clearReason();
  started = performance.now(); parley.timings = {};
  for (const id of ["t-offer", "t-answer", "t-ice", "t-dtls", "t-audio", "t-channel"]) $(id).textContent = "—";
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    micTrack = stream.getAudioTracks()[0];
    updateMic();
    pc = parley.pc = new RTCPeerConnection({ iceServers: [] });  // on window.parley for tests and the console
    stream.getTracks().forEach((track) => pc.addTrack(track, stream));
    openChannel();
    pc.ontrack = (event) => { $("remote").srcObject = event.streams[0] || new MediaStream([event.track]); };
    pc.oniceconnectionstatechange = () => { if (["connected", "completed"].includes(pc.iceConnectionState)) mark("ice", "t-ice"); };
    pc.onconnectionstatechange = () => {
      setState(pc.connectionState);
      if (pc.connectionState === "connected") { mark("dtls", "t-dtls"); if (!parley.error) clearReason(); }
      if (["failed", "closed", "disconnected"].includes(pc.connectionState)) {
        // The call is over (the agent or the server ended it, or the path failed): Call works again.
        if (pc.connectionState === "failed" && !parley.reason) showReason("The connection failed: the path to Parley stopped working.");
        $("call").disabled = false; $("hangup").disabled = true; $("talk").disabled = true; $("agent").disabled = false;
      }
    };
    setState("connecting");
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve();
      pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && resolve();
      setTimeout(resolve, 2000);
    });
    mark("offer", "t-offer");
    parley.agent = $("agent").value;
    // What an app's backend does with its API key: mint a short-lived client secret that fixes
    // the session (here, the agent). parley dev serves this route for the page; a browser never
    // holds the API key itself.
    // A secret given in the page's address (?client_secret=ek_…) fixes the session itself.
    const given = new URLSearchParams(location.search).get("client_secret");
    const session = parley.agent ? { agent: parley.agent } : {};
    if (given) {
      parley.secret = given;
    } else {
      const minted = await fetch("/dev/client_secret", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ expires_after: { anchor: "created_at", seconds: 600 }, session }) });
      if (!minted.ok) throw new Error("client secret: " + minted.status + " " + (await minted.text()));
      parley.secret = (await minted.json()).value;
    }
    // The offer as OpenAI's Realtime calls endpoint takes it: multipart, sdp and session.
    const form = new FormData();
    form.append("sdp", pc.localDescription.sdp);
    if (!given) form.append("session", JSON.stringify(session));
    const response = await fetch("/v1/realtime/calls", { method: "POST", headers: authorization(), body: form });
    if (!response.ok) throw new Error("signaling: " + response.status + " " + (await response.text()));
    parley.callId = (response.headers.get("Location") || "").split("/").pop();
    const answer = await response.text();
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    mark("answer", "t-answer");
    const candidate = (answer.match(/a=candidate:\S+ \d+ udp \d+ (\S+) (\d+)/i) || []).slice(1).join(":") || "its advertised address";
    diagnose(candidate);
    $("hangup").disabled = false; $("talk").disabled = false; $("agent").disabled = true;
    statsTimer = setInterval(readStats, 250);
  } catch (error) {
    parley.error = String(error); $("error").textContent = parley.error; setState("failed");
    $("call").disabled = false;
  }
}

async function readStats() {
  if (!pc) return;
  const report = await pc.getStats();
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      parley.stats.packetsReceived = s.packetsReceived; parley.stats.packetsLost = s.packetsLost;
      parley.stats.jitter = s.jitter; parley.stats.bytesReceived = s.bytesReceived;
      parley.stats.audioLevel = s.audioLevel; parley.stats.totalAudioEnergy = s.totalAudioEnergy;
      if (s.packetsReceived > 0) mark("audio", "t-audio");
    }
    if (s.type === "remote-inbound-rtp" && s.kind === "audio" && s.roundTripTime !== undefined) parley.stats.roundTripTime = s.roundTripTime;
    if (s.type === "outbound-rtp" && s.kind === "audio") parley.stats.packetsSent = s.packetsSent;
    if (s.type === "transport" && s.selectedCandidatePairId) {
      const pair = report.get(s.selectedCandidatePairId);
      const local = pair && report.get(pair.localCandidateId), remote = pair && report.get(pair.remoteCandidateId);
      const hostPort = (c) => (c.address.includes(":") ? "[" + c.address + "]" : c.address) + ":" + c.port;
      if (local) parley.stats.localAddress = hostPort(local);
      if (remote) parley.stats.remoteAddress = hostPort(remote);
    }
  });
  const st = parley.stats;
  $("s-rtt").textContent = st.roundTripTime !== undefined ? (st.roundTripTime * 1000).toFixed(1) + " ms" : "—";
  $("s-jitter").textContent = st.jitter !== undefined ? (st.jitter * 1000).toFixed(1) + " ms" : "—";
  $("s-lost").textContent = st.packetsLost ?? "—";
  $("s-received").textContent = st.packetsReceived ?? "—";
  chart("rtt", st.roundTripTime !== undefined ? st.roundTripTime * 1000 : 0);
  chart("jitter", st.jitter !== undefined ? st.jitter * 1000 : 0);
  chart("lost", st.packetsLost ?? 0);
  chart("level", st.audioLevel ?? 0);
}

// ICE restart: new credentials through PATCH on the call, same DTLS association.
parley.restartIce = async function () {
  pc.restartIce();
  await pc.setLocalDescription(await pc.createOffer({ iceRestart: true }));
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && resolve();
    setTimeout(resolve, 2000);
  });
  const response = await fetch("/v1/realtime/calls/" + parley.callId, {
    method: "PATCH", headers: { "Content-Type": "application/sdp", ...authorization() }, body: pc.localDescription.sdp });
  if (!response.ok) throw new Error("ICE restart: " + response.status + " " + (await response.text()));
  await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
  parley.iceRestarts = (parley.iceRestarts || 0) + 1;
};

async function hangup(tellServer = true) {
  clearInterval(statsTimer); clearInterval(diagnoseTimer);
  if (tellServer && parley.callId) {
    await fetch("/v1/realtime/calls/" + parley.callId, { method: "DELETE", headers: authorization() }).catch(() => {});
  }
  if (pc) pc.close();
  pc = null; setState("closed");
  $("call").disabled = false; $("hangup").disabled = true; $("talk").disabled = true; $("agent").disabled = false;
}

$("call").onclick = call;
for (const [type, held] of [["pointerdown", true], ["pointerup", false], ["pointerleave", false]]) {
  $("talk").addEventListener(type, () => { holding = held; $("talk").classList.toggle("held", held); updateMic(); });
}
$("open-mic").onchange = updateMic;
$("event-send").onclick = () => sendEvent($("event-text").value);
$("hangup").onclick = () => hangup();
if (new URLSearchParams(location.search).get("autostart") === "1") call();
</script>
</body>
</html>
"""#
}
