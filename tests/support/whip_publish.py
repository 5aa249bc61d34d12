"""A WHIP publisher for the tests: GStreamer's webrtcbin (through Debian's python3-gi) sends a
live test pattern in H.264 and a tone in Opus to a WHIP endpoint, as OBS Studio 30 does.

Contract: `whip_publish.py --url URL --key KEY --seconds N` makes its offer, waits for ICE
gathering to complete (the streamer takes no trickled candidates), POSTs it with the key as
the bearer token, applies the answer and publishes for N seconds, then DELETEs its session's
resource and exits 0. Everything it says goes to stderr, one fact a line:

    status <HTTP status>          the answer to the POST
    refusal <code>                its Slotcast-Refusal header, when the streamer refused
    body <first line>             the answer's words, when it is not an SDP answer
    connection <state>            webrtcbin's connection state, as it changes
    deleted <HTTP status>         the answer to the DELETE

It exits 3 when the POST is not answered 201, 4 when the connection fails or closes before
the N seconds are over (the streamer cut it off), 5 when it does not connect within 10 s.
"""

import argparse
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

# A keyframe every second; no B-frames (WebRTC's H.264 has none); Opus at 20 ms.
PIPELINE = (
    "webrtcbin name=whip bundle-policy=max-bundle "
    "videotestsrc is-live=true pattern=ball "
    "! video/x-raw,width=320,height=240,framerate=25/1 "
    "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 bframes=0 "
    "! video/x-h264,profile=constrained-baseline "
    "! rtph264pay config-interval=-1 aggregate-mode=zero-latency "
    "! application/x-rtp,media=video,encoding-name=H264,payload=96 ! whip. "
    "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample "
    "! audio/x-raw,rate=48000,channels=2 ! opusenc frame-size=20 ! rtpopuspay "
    "! application/x-rtp,media=audio,encoding-name=OPUS,payload=111 ! whip. "
)


def ecdsa_pem():
    """A self-signed P-256 certificate and its key, in PEM, and its SHA-256 fingerprint:
    GStreamer's DTLS makes an RSA one, and the streamer's DTLS (str0m's dimpl) takes ECDSA
    only, as browsers and OBS send."""
    key = subprocess.run(
        ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout"],
        check=True, capture_output=True,
    ).stdout
    cert = subprocess.run(
        ["openssl", "req", "-new", "-x509", "-key", "/dev/stdin", "-subj", "/CN=whip-publish",
         "-days", "1"],
        input=key, check=True, capture_output=True,
    ).stdout
    fingerprint = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256"],
        input=cert, check=True, capture_output=True,
    ).stdout.decode().strip().split("=", 1)[1]
    return (cert + key).decode(), fingerprint


def say(*words):
    print(*words, file=sys.stderr, flush=True)


class Publisher:
    def __init__(self, url, key, seconds):
        self.url = url
        self.key = key
        self.seconds = seconds
        self.location = None
        self.code = 0
        self.loop = GLib.MainLoop()
        self.pipe = Gst.parse_launch(PIPELINE)
        self.webrtc = self.pipe.get_by_name("whip")
        self.webrtc.connect("notify::ice-gathering-state", self.on_gathering)
        self.webrtc.connect("notify::connection-state", self.on_connection)
        self.pem, self.fingerprint = ecdsa_pem()
        # Keepalives as binding requests (libnice sends indications by default, which an
        # ICE-lite peer such as the streamer does not count as the publisher's consent).
        # (Both held for the run: PyGObject 3.42 lets go of what it gave a temporary, which
        # takes webrtcbin's own ICE agent with it.)
        self.ice = self.webrtc.get_property("ice-agent")
        self.nice = self.ice.get_property("agent")
        self.nice.set_property("keepalive-conncheck", True)
        self.pipe.connect("deep-element-added", self.on_element)
        self.connected = False
        self.posted = False
        # The transceivers the linked pads made: send only.
        for i in range(2):
            transceiver = self.webrtc.emit("get-transceiver", i)
            transceiver.set_property(
                "direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY
            )

    def finish(self, code):
        self.code = code
        self.loop.quit()
        return False

    def on_element(self, _bin, _sub, element):
        factory = element.get_factory()
        if factory is not None and factory.get_name() == "dtlsdec":
            element.set_property("pem", self.pem)

    def make_offer(self):
        # Once media flows: webrtcbin offers the codecs its pads' caps say.
        pads = self.webrtc.sinkpads
        if len(pads) < 2 or any(pad.get_current_caps() is None for pad in pads):
            return True
        promise = Gst.Promise.new()
        self.webrtc.emit("create-offer", None, promise)
        promise.wait()
        # The offer made anew from its text: handing webrtcbin the reply's own description
        # through PyGObject 3.42 leaves it without its SDP.
        # Each step held in a name: a temporary's memory is freed under the next step.
        reply = promise.get_reply()
        made = reply.get_value("offer")
        text = made.sdp.as_text()
        # The fingerprint of the certificate given to DTLS (webrtcbin wrote its own's).
        text = "\r\n".join(
            f"a=fingerprint:sha-256 {self.fingerprint}"
            if line.startswith("a=fingerprint:") else line
            for line in text.splitlines()
        ) + "\r\n"
        _, sdp = GstSdp.SDPMessage.new_from_text(text)
        self.offer = GstWebRTC.WebRTCSessionDescription.new(
            GstWebRTC.WebRTCSDPType.OFFER, sdp
        )
        self.webrtc.emit("set-local-description", self.offer, Gst.Promise.new())
        return False

    def on_gathering(self, webrtc, _):
        state = webrtc.get_property("ice-gathering-state")
        if state == GstWebRTC.WebRTCICEGatheringState.COMPLETE and not self.posted:
            self.posted = True
            GLib.idle_add(self.post)

    def post(self):
        local = self.webrtc.get_property("local-description")
        offer = local.sdp.as_text()
        request = urllib.request.Request(
            self.url,
            data=offer.encode(),
            method="POST",
            headers={
                "Content-Type": "application/sdp",
                "Authorization": f"Bearer {self.key}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                status, headers, body = answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as refused:
            status, headers, body = refused.code, refused.headers, refused.read()
        except OSError as err:
            say("status 0", err)
            return self.finish(3)
        say("status", status)
        if status != 201:
            if headers.get("Slotcast-Refusal"):
                say("refusal", headers["Slotcast-Refusal"])
            say("body", body.decode(errors="replace").splitlines()[0] if body else "")
            return self.finish(3)
        self.location = urllib.parse.urljoin(self.url, headers["Location"])
        ok, sdp = GstSdp.SDPMessage.new_from_text(body.decode())
        answer = GstWebRTC.WebRTCSessionDescription.new(
            GstWebRTC.WebRTCSDPType.ANSWER, sdp
        )
        self.answer = answer
        self.webrtc.emit("set-remote-description", answer, Gst.Promise.new())
        # The answer's candidates, handed to ICE as trickled ones (up to `typ host`: libnice
        # 0.1 reads no other attribute after it).
        for line in body.decode().splitlines():
            if line.startswith("a=candidate:"):
                words = line[2:].split()
                self.webrtc.emit("add-ice-candidate", 0, " ".join(words[:8]))
        GLib.timeout_add_seconds(10, self.connect_deadline)
        return False

    def connect_deadline(self):
        if not self.connected:
            say("connection not made within 10 s")
            return self.finish(5)
        return False

    def on_connection(self, webrtc, _):
        state = webrtc.get_property("connection-state")
        say("connection", state.value_nick)
        if state == GstWebRTC.WebRTCPeerConnectionState.CONNECTED and not self.connected:
            self.connected = True
            GLib.timeout_add_seconds(self.seconds, self.done)
        elif state in (
            GstWebRTC.WebRTCPeerConnectionState.FAILED,
            GstWebRTC.WebRTCPeerConnectionState.CLOSED,
        ):
            GLib.idle_add(self.finish, 4)

    def done(self):
        request = urllib.request.Request(self.location, method="DELETE")
        request.add_header("Authorization", f"Bearer {self.key}")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                say("deleted", answer.status)
        except urllib.error.HTTPError as refused:
            say("deleted", refused.code)
        return self.finish(0)

    def run(self):
        bus = self.pipe.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self.on_error)
        self.pipe.set_state(Gst.State.PLAYING)
        GLib.timeout_add(100, self.make_offer)
        self.loop.run()
        self.pipe.set_state(Gst.State.NULL)
        return self.code

    def on_error(self, _bus, message):
        err, debug = message.parse_error()
        say("error", err.message, debug or "")
        self.finish(4)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    Gst.init(None)
    return Publisher(args.url, args.key, args.seconds).run()


if __name__ == "__main__":
    sys.exit(main())
