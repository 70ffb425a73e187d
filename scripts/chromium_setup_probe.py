#!/usr/bin/env python3
"""Times headless Chromium's call setup against a Parley signaling URL, one fresh browser per call.

Run inside the client's network namespace by scripts/bench_warp.py (it crosses impair.py's link);
prints one JSON object: for each variant, the list of per-call figures in milliseconds from the
offer's POST: the answer, ICE connected, DTLS connected (connectionState), the data channel open
and the first echoed audio packet (the receiver's first synchronization source).

Variants:
  plain         no field trials; oai-events opened with DCEP (what every browser does today)
  snap          WebRTC-Sctp-Snap; oai-events negotiated (negotiated: true, ?dcid=0)
  warp          + WebRTC-IceHandshakeDtls (SPED): the ClientHello rides the first check
  warp-no-pqc   warp without WebRtcPqcForDtls: a one-datagram ClientHello, so the whole of it rides

Usage: chromium_setup_probe.py --base http://10.77.0.2:8080 [--runs 10] [--variants plain,snap,warp,warp-no-pqc]
"""
import argparse
import json
import shutil
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

TRIALS = {
    "plain": [],
    "snap": ["--force-fieldtrials=WebRTC-Sctp-Snap/Enabled/"],
    "warp": ["--force-fieldtrials=WebRTC-IceHandshakeDtls/Enabled/WebRTC-Sctp-Snap/Enabled/"],
    "warp-no-pqc": ["--force-fieldtrials=WebRTC-IceHandshakeDtls/Enabled/WebRTC-Sctp-Snap/Enabled/",
                    "--disable-features=WebRtcPqcForDtls"],
}

# One call: every step is performance.now() less the POST's start. With `negotiated`, oai-events
# is created negotiated on stream 0 and the offer POSTed with ?dcid=0 (no DCEP).
CALL = """
const [negotiated, done] = arguments;
(async () => {
  const pc = new RTCPeerConnection();
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  const sender = pc.addTrack(stream.getAudioTracks()[0], stream);
  const channel = negotiated ? pc.createDataChannel("oai-events", { negotiated: true, id: 0 })
                             : pc.createDataChannel("oai-events");
  const at = {};
  let posted = 0;
  const mark = (name) => { if (posted && !(name in at)) at[name] = performance.now() - posted; };
  pc.oniceconnectionstatechange = () => { if (pc.iceConnectionState === "connected") mark("ice"); };
  pc.onconnectionstatechange = () => { if (pc.connectionState === "connected") mark("dtls"); };
  const opened = new Promise((resolve) => { channel.onopen = () => { mark("dataChannelOpen"); resolve(); }; });
  const receiver = pc.getTransceivers()[0].receiver;
  // Played out, so the receiver reports the sources it hears.
  pc.ontrack = (event) => { const audio = new Audio(); audio.srcObject = event.streams[0]; audio.play().catch(() => {}); };
  const heard = new Promise((resolve) => {
    const poll = () => { if (receiver.getSynchronizationSources().length) { mark("firstEchoedAudio"); resolve(); } else setTimeout(poll, 1); };
    poll();
  });
  await pc.setLocalDescription(await pc.createOffer());
  const minted = await fetch("/dev/client_secret", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ expires_after: { anchor: "created_at", seconds: 600 }, session: {} }) });
  const secret = (await minted.json()).value;
  posted = performance.now();
  const response = await fetch("/v1/realtime/calls" + (negotiated ? "?dcid=0" : ""), { method: "POST",
    headers: { "Content-Type": "application/sdp", Authorization: "Bearer " + secret }, body: pc.localDescription.sdp });
  if (!response.ok) return done({ error: response.status + " " + (await response.text()) });
  const answer = await response.text();
  mark("answer");
  await pc.setRemoteDescription({ type: "answer", sdp: answer });
  await Promise.race([Promise.all([opened, heard]), new Promise((resolve) => setTimeout(resolve, 10000))]);
  const offer = pc.localDescription.sdp;
  let tlsVersion = null;  // the DTLS version getStats reports: FEFC is 1.3, FEFD 1.2
  for (const report of (await pc.getStats()).values()) if (report.type === "transport") tlsVersion = report.tlsVersion;
  done({ ...at, callId: (response.headers.get("Location") || "").split("/").pop(), tlsVersion,
         offeredSped: /a=ice-options:.*\\bsped\\b/.test(offer), answeredSped: /a=ice-options:.*\\bsped\\b/.test(answer),
         snap: answer.includes("a=sctp-init:") });
  pc.close();
})().catch((error) => done({ error: String(error) }));
"""


def browser(base, extra):
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--use-fake-ui-for-media-stream",
                 "--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required",
                 "--disable-features=WebRtcHideLocalIpsWithMdns", f"--unsafely-treat-insecure-origin-as-secure={base}",
                 *extra):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--variants", default=",".join(TRIALS))
    args = parser.parse_args()
    variants = args.variants.split(",")
    results = {variant: [] for variant in variants}
    # Variants interleave, run by run, so a slow moment of the machine is shared among them.
    for _ in range(args.runs):
        for variant in variants:
            driver = browser(args.base, TRIALS[variant])
            try:
                driver.set_script_timeout(30)
                driver.get(args.base + "/")
                results[variant].append(driver.execute_async_script(CALL, variant != "plain"))
            finally:
                driver.quit()
            print(f"{variant}: {results[variant][-1]}", file=sys.stderr, flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
