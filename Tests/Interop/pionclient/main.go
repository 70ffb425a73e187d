// pionclient: a WebRTC client on Pion v3 for Parley's interop tests and setup benchmarks. Pion is
// a full-ICE agent and, as the offerer, the controlling one: the role a native app (or a browser)
// takes against Parley's ICE-lite answer. Each call has one Opus track sending a frame every 20 ms
// and an `oai-events` data channel sending a small JSON event every second; Parley's echo agent
// sends both back. The client measures each setup step from the offer's POST, counts the media
// both ways, records every connection-state change, and counts the STUN Binding requests Pion
// sends (from its ICE log, see iceLog) — the consent checks an ICE-lite server depends on.
//
//	pionclient -url http://127.0.0.1:8080/v1/realtime/calls [-calls N] [-seconds S] [-json]
//
// One call prints that call's report; several sequential calls print a summary with p50/p99 of
// each setup step (and the failing calls in full). The exit status is 0 only if every call stayed
// connected for its whole duration with audio both ways (at least 90% of the frames sent came
// back, and were still coming back at the end) and every data-channel event echoed; 1 otherwise.
//
// Test and benchmark code only, never part of the product. It builds offline against Debian's
// Pion sources (a GOPATH build, see Tests/Interop/test_pion.py).
package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/interceptor"
	"github.com/pion/logging"
	"github.com/pion/webrtc/v3"
	"github.com/pion/webrtc/v3/pkg/media"
)

const (
	frameInterval = 20 * time.Millisecond
	eventInterval = time.Second
	// A call passes only if at least this share of the audio frames sent came back.
	minimumEchoRatio = 0.9
	// ... and the echo was still flowing this close to the end: a server that dropped the call
	// stops echoing several seconds before Pion notices (its ICE disconnects after 5 s of silence).
	maximumFinalSilence = time.Second
)

type options struct {
	url          string
	calls        int
	seconds      float64
	setupTimeout time.Duration
	payloadBytes int
	jsonOutput   bool
	logICE       bool
}

func main() {
	var opts options
	flag.StringVar(&opts.url, "url", "http://127.0.0.1:8080/v1/realtime/calls", "where to POST the SDP offer")
	flag.IntVar(&opts.calls, "calls", 1, "sequential calls to make")
	flag.Float64Var(&opts.seconds, "seconds", 5, "how long each call lasts once connected")
	flag.DurationVar(&opts.setupTimeout, "setup-timeout", 15*time.Second, "how long a call may take to connect")
	flag.IntVar(&opts.payloadBytes, "payload-bytes", 60, "RTP payload size (an Opus voice frame is 40-80 bytes)")
	flag.BoolVar(&opts.jsonOutput, "json", false, "print JSON (one object) instead of text")
	flag.BoolVar(&opts.logICE, "log-ice", false, "print Pion's ICE log at trace level to stderr (every STUN check)")
	flag.StringVar(&apiKey, "api-key", os.Getenv("PARLEY_API_KEY"), "the API key (or client secret) requests carry as Authorization: Bearer")
	flag.Parse()
	rand.Seed(time.Now().UnixNano()) // Go 1.19's math/rand starts from the same seed in every process
	if opts.calls < 1 || opts.seconds <= 0 || opts.payloadBytes < headerBytes {
		fmt.Fprintf(os.Stderr, "pionclient: -calls must be >= 1, -seconds > 0, -payload-bytes >= %d\n", headerBytes)
		os.Exit(2)
	}

	results := make([]*callReport, 0, opts.calls)
	for i := 1; i <= opts.calls; i++ {
		report := runCall(&opts, i)
		results = append(results, report)
		if opts.calls > 1 && !opts.jsonOutput {
			fmt.Fprintf(os.Stderr, "call %d: %s\n", i, report.oneLine())
		}
	}

	var output interface{}
	if opts.calls == 1 {
		output = results[0]
	} else {
		output = summarize(&opts, results)
	}
	if opts.jsonOutput {
		encoder := json.NewEncoder(os.Stdout)
		encoder.SetIndent("", "  ")
		encoder.Encode(output)
	} else if opts.calls == 1 {
		results[0].printText(os.Stdout)
	} else {
		output.(*summary).printText(os.Stdout)
	}
	for _, report := range results {
		if !report.OK {
			os.Exit(1)
		}
	}
}

// MARK: one call

// The report of one call. Times are milliseconds from the offer's POST; "seconds" are seconds
// since the peer connection connected (the call's own clock).
type callReport struct {
	Call        int           `json:"call"`
	OK          bool          `json:"ok"`
	Failures    []string      `json:"failures,omitempty"`
	Location    string        `json:"location,omitempty"`
	Seconds     float64       `json:"seconds"`          // asked for
	Connected   float64       `json:"connectedSeconds"` // stayed connected (until a drop or the end)
	Setup       setupSteps    `json:"setupMs"`
	Dropped     *drop         `json:"dropped,omitempty"`
	States      []stateChange `json:"states"`
	Audio       audioReport   `json:"audio"`
	DataChannel dataReport    `json:"dataChannel"`
	STUN        stunReport    `json:"stun"`
	Server      *serverStatus `json:"server,omitempty"`
}

type setupSteps struct {
	Answer           *float64 `json:"answer"`           // the POST's 201 and answer received
	ICEConnected     *float64 `json:"iceConnected"`     // Pion's ICE state "connected" (a pair nominated)
	Connected        *float64 `json:"connected"`        // peer connection "connected": DTLS done, SRTP keyed
	FirstEchoedAudio *float64 `json:"firstEchoedAudio"` // the first of our frames back from the echo agent
	DataChannelOpen  *float64 `json:"dataChannelOpen"`  // `oai-events` open (SCTP and DCEP done)
}

type stateChange struct {
	Of    string  `json:"of"` // "ice" or "peer"
	State string  `json:"state"`
	Ms    float64 `json:"ms"`
}

// The first time, after connecting and before our hangup, that the connection left "connected".
type drop struct {
	Of     string  `json:"of"`
	State  string  `json:"state"`
	Second float64 `json:"second"`
}

type audioReport struct {
	PacketsSent     int64        `json:"packetsSent"`
	PacketsReceived int64        `json:"packetsReceived"` // distinct frames of ours echoed back
	Duplicates      int64        `json:"duplicates"`      // the same frame again (retransmission)
	Foreign         int64        `json:"foreign"`         // RTP that was not one of our frames, byte for byte
	EchoRatio       float64      `json:"echoRatio"`
	EchoMs          *percentiles `json:"echoMs"`         // send → echo received, per frame
	LongestGapMs    float64      `json:"longestGapMs"`   // between consecutive echoed frames
	LastEchoSecond  *float64     `json:"lastEchoSecond"` // when the last echoed frame arrived
	FirstEchoSecond *float64     `json:"firstEchoSecond"`
}

type dataReport struct {
	Opened   bool         `json:"opened"`
	Sent     int          `json:"sent"`
	Echoed   int          `json:"echoed"`
	Foreign  int          `json:"foreign"`
	EchoMs   *percentiles `json:"echoMs"`
	ClosedAt *float64     `json:"closedSecond,omitempty"` // the channel closed before our hangup
}

// Counted from Pion's ICE log. Against an ICE-lite server that only answers checks, the requests
// Pion sends after connecting are all that keeps consent fresh (RFC 7675, 30 s); requestsReceived
// counts the checks a server sends on its own.
type stunReport struct {
	RequestsSent          int       `json:"requestsSent"`
	RequestsAfterConnect  int       `json:"requestsSentAfterConnected"`
	RequestSecondsAfter   []float64 `json:"requestSecondsAfterConnected"` // at most the first 50
	ResponsesReceived     int       `json:"responsesReceived"`
	RequestsReceived      int       `json:"requestsReceived"` // checks from the server
	RequestsReceivedAfter int       `json:"requestsReceivedAfterConnected"`
}

type serverStatus struct {
	Status int             `json:"status"` // of GET Location at the end of the call
	Body   json.RawMessage `json:"body,omitempty"`
	Text   string          `json:"text,omitempty"` // a body that is not JSON
}

// The live state of one call, written from Pion's goroutines.
type call struct {
	opts  *options
	index int
	tag   uint32 // marks this call's frames and events: an echo from an earlier call does not count

	mu           sync.Mutex
	start        time.Time // the POST
	connectedAt  time.Time
	hangingUp    bool
	report       callReport
	echoLatency  []float64
	eventLatency []float64
	echoed       map[uint32]bool
	lastEcho     time.Time
	pending      map[int]time.Time // data-channel events sent and not yet echoed

	connected  chan struct{} // closed when the peer connection connects
	terminal   chan struct{} // closed when it fails or closes
	onceUp     sync.Once
	onceDown   sync.Once
	onceOff    sync.Once
	sendersOff chan struct{} // closed to stop the audio and event senders
}

func runCall(opts *options, index int) *callReport {
	c := &call{
		opts: opts, index: index, tag: rand.Uint32(),
		echoed: map[uint32]bool{}, pending: map[int]time.Time{},
		connected: make(chan struct{}), terminal: make(chan struct{}), sendersOff: make(chan struct{}),
	}
	c.report = callReport{Call: index, Seconds: opts.seconds, States: []stateChange{},
		STUN: stunReport{RequestSecondsAfter: []float64{}}}
	if err := c.run(); err != nil {
		c.fail(err.Error())
	}
	c.finish()
	return &c.report
}

func (c *call) fail(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.report.Failures = append(c.report.Failures, reason)
}

// sinceStart is milliseconds from the POST (0 before it).
func (c *call) sinceStart(t time.Time) float64 {
	if c.start.IsZero() {
		return 0
	}
	return float64(t.Sub(c.start).Microseconds()) / 1000
}

// callSecond is seconds since the peer connection connected.
func (c *call) callSecond(t time.Time) float64 {
	return math.Round(t.Sub(c.connectedAt).Seconds()*1000) / 1000
}

func (c *call) run() error {
	api, err := c.newAPI()
	if err != nil {
		return err
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{}) // no ICE servers: host candidates only
	if err != nil {
		return err
	}
	defer pc.Close()
	defer c.stopSenders() // on every path: a sender left running would outlive its call

	track, err := webrtc.NewTrackLocalStaticSample(
		webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "pionclient")
	if err != nil {
		return err
	}
	sender, err := pc.AddTrack(track)
	if err != nil {
		return err
	}
	// RTCP for our track (receiver reports, NACKs) reaches Pion's interceptors only if read.
	go func() {
		buffer := make([]byte, 1500)
		for {
			if _, _, err := sender.Read(buffer); err != nil {
				return
			}
		}
	}()
	pc.OnTrack(func(remote *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for {
			packet, _, err := remote.ReadRTP()
			if err != nil {
				return
			}
			c.receiveAudio(packet.Payload, time.Now())
		}
	})

	channel, err := pc.CreateDataChannel("oai-events", nil)
	if err != nil {
		return err
	}
	channel.OnOpen(func() {
		c.mu.Lock()
		c.report.DataChannel.Opened = true
		c.report.Setup.DataChannelOpen = ms(c.sinceStart(time.Now()))
		c.mu.Unlock()
		go c.sendEvents(channel)
	})
	channel.OnMessage(func(message webrtc.DataChannelMessage) { c.receiveEvent(message, time.Now()) })
	channel.OnClose(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !c.hangingUp && !c.connectedAt.IsZero() {
			second := c.callSecond(time.Now())
			c.report.DataChannel.ClosedAt = &second
		}
	})

	pc.OnICEConnectionStateChange(func(state webrtc.ICEConnectionState) {
		now := time.Now()
		c.mu.Lock()
		defer c.mu.Unlock()
		c.report.States = append(c.report.States, stateChange{"ice", state.String(), c.sinceStart(now)})
		switch state {
		case webrtc.ICEConnectionStateConnected:
			if c.report.Setup.ICEConnected == nil {
				c.report.Setup.ICEConnected = ms(c.sinceStart(now))
			}
		case webrtc.ICEConnectionStateDisconnected, webrtc.ICEConnectionStateFailed, webrtc.ICEConnectionStateClosed:
			c.noteDropLocked("ice", state.String(), now)
		}
	})
	pc.OnConnectionStateChange(func(state webrtc.PeerConnectionState) {
		now := time.Now()
		c.mu.Lock()
		c.report.States = append(c.report.States, stateChange{"peer", state.String(), c.sinceStart(now)})
		switch state {
		case webrtc.PeerConnectionStateConnected:
			if c.connectedAt.IsZero() {
				c.connectedAt = now
				c.report.Setup.Connected = ms(c.sinceStart(now))
				c.onceUp.Do(func() { close(c.connected) })
				go c.sendAudio(track)
			}
		case webrtc.PeerConnectionStateDisconnected:
			c.noteDropLocked("peer", state.String(), now)
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			c.noteDropLocked("peer", state.String(), now)
			c.onceDown.Do(func() { close(c.terminal) })
		}
		c.mu.Unlock()
	})

	// The whole offer at once, candidates included (Parley's signaling takes no trickle).
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return err
	}
	select {
	case <-gathered:
	case <-time.After(5 * time.Second):
		return errors.New("ICE gathering did not complete in 5 s")
	}

	c.mu.Lock()
	c.start = time.Now()
	c.mu.Unlock()
	location, answer, err := postOffer(c.opts.url, pc.LocalDescription().SDP)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.report.Setup.Answer = ms(c.sinceStart(time.Now()))
	c.report.Location = location
	c.mu.Unlock()
	if location != "" {
		defer func() {
			status := endCall(location)
			c.mu.Lock()
			c.report.Server = status
			c.mu.Unlock()
		}()
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		return fmt.Errorf("answer refused: %v", err)
	}

	select {
	case <-c.connected:
	case <-c.terminal:
		return errors.New("the connection failed before connecting")
	case <-time.After(c.opts.setupTimeout):
		return fmt.Errorf("not connected within %v", c.opts.setupTimeout)
	}

	// The call itself. It ends early only on "failed" or "closed"; "disconnected" may recover.
	select {
	case <-time.After(time.Duration(c.opts.seconds * float64(time.Second))):
	case <-c.terminal:
	}
	end := time.Now()
	c.stopSenders()
	c.drain()
	c.mu.Lock()
	c.hangingUp = true
	if c.report.Dropped != nil {
		c.report.Connected = c.report.Dropped.Second
	} else {
		c.report.Connected = c.callSecond(end)
	}
	c.mu.Unlock()
	return nil
}

func (c *call) stopSenders() { c.onceOff.Do(func() { close(c.sendersOff) }) }

// newAPI makes one Pion API per call, so that each call's ICE log (and STUN count) is its own.
func (c *call) newAPI() (*webrtc.API, error) {
	settings := webrtc.SettingEngine{}
	settings.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	// Pion leaves loopback out of its host candidates by default; Parley's tests run on loopback.
	settings.SetIncludeLoopbackCandidate(true)
	// No .local candidates and no multicast socket: the server is addressed by IP.
	settings.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	base := logging.NewDefaultLoggerFactory() // honours PION_LOG_TRACE=… and friends
	base.Writer = os.Stderr                   // stdout carries the report
	if c.opts.logICE {
		base.ScopeLevels["ice"] = logging.LogLevelTrace
	}
	settings.LoggerFactory = loggerFactory{base: base, call: c}

	media := &webrtc.MediaEngine{}
	if err := media.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	// Pion's defaults (NACK, RTCP reports, TWCC), as an application on Pion would have them.
	interceptors := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(media, interceptors); err != nil {
		return nil, err
	}
	return webrtc.NewAPI(webrtc.WithSettingEngine(settings), webrtc.WithMediaEngine(media),
		webrtc.WithInterceptorRegistry(interceptors)), nil
}

// noteDropLocked records the first departure from "connected" between connecting and our hangup.
func (c *call) noteDropLocked(of, state string, now time.Time) {
	if c.connectedAt.IsZero() || c.hangingUp || c.report.Dropped != nil {
		return
	}
	c.report.Dropped = &drop{Of: of, State: state, Second: c.callSecond(now)}
}

// MARK: audio

// An audio frame's payload: a valid Opus TOC byte (CELT fullband, 20 ms, one frame) so that
// anything that looks at it sees Opus, then the call's tag, the frame's index and its send time,
// then filler computed from the index, so that an echo is checked byte for byte.
const headerBytes = 1 + 4 + 4 + 8

func (c *call) frame(index uint32, sentAt time.Time) []byte {
	payload := make([]byte, c.opts.payloadBytes)
	payload[0] = 0xFC
	binary.BigEndian.PutUint32(payload[1:], c.tag)
	binary.BigEndian.PutUint32(payload[5:], index)
	binary.BigEndian.PutUint64(payload[9:], uint64(sentAt.UnixNano()))
	fill(payload[headerBytes:], index)
	return payload
}

func fill(filler []byte, index uint32) {
	for i := range filler {
		filler[i] = byte(index*7 + uint32(i)*13)
	}
}

// sendAudio sends a frame at once and then every 20 ms, from connecting until the call ends.
func (c *call) sendAudio(track *webrtc.TrackLocalStaticSample) {
	ticker := time.NewTicker(frameInterval)
	defer ticker.Stop()
	for index := uint32(0); ; index++ {
		payload := c.frame(index, time.Now())
		if err := track.WriteSample(media.Sample{Data: payload, Duration: frameInterval}); err == nil {
			c.mu.Lock()
			c.report.Audio.PacketsSent++
			c.mu.Unlock()
		}
		select {
		case <-c.sendersOff:
			return
		case <-ticker.C:
		}
	}
}

func (c *call) receiveAudio(payload []byte, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	audio := &c.report.Audio
	if len(payload) != c.opts.payloadBytes || binary.BigEndian.Uint32(payload[1:]) != c.tag {
		audio.Foreign++
		return
	}
	index := binary.BigEndian.Uint32(payload[5:])
	sentAt := time.Unix(0, int64(binary.BigEndian.Uint64(payload[9:])))
	if !bytes.Equal(payload, c.frame(index, sentAt)) {
		audio.Foreign++
		return
	}
	if c.echoed[index] {
		audio.Duplicates++
		return
	}
	c.echoed[index] = true
	audio.PacketsReceived++
	c.echoLatency = append(c.echoLatency, float64(now.Sub(sentAt).Microseconds())/1000)
	if c.report.Setup.FirstEchoedAudio == nil {
		c.report.Setup.FirstEchoedAudio = ms(c.sinceStart(now))
		second := c.callSecond(now)
		audio.FirstEchoSecond = &second
	}
	if !c.lastEcho.IsZero() {
		if gap := float64(now.Sub(c.lastEcho).Microseconds()) / 1000; gap > audio.LongestGapMs {
			audio.LongestGapMs = gap
		}
	}
	c.lastEcho = now
}

// MARK: data channel

type event struct {
	Type string `json:"type"`
	Tag  uint32 `json:"tag"`
	Seq  int    `json:"seq"`
}

// sendEvents sends a small JSON event at once and then every second until the call ends.
func (c *call) sendEvents(channel *webrtc.DataChannel) {
	ticker := time.NewTicker(eventInterval)
	defer ticker.Stop()
	for seq := 0; ; seq++ {
		text, _ := json.Marshal(event{Type: "pionclient.ping", Tag: c.tag, Seq: seq})
		c.mu.Lock()
		c.pending[seq] = time.Now()
		c.mu.Unlock()
		if err := channel.SendText(string(text)); err == nil {
			c.mu.Lock()
			c.report.DataChannel.Sent++
			c.mu.Unlock()
		} else {
			c.mu.Lock()
			delete(c.pending, seq)
			c.mu.Unlock()
		}
		select {
		case <-c.sendersOff:
			return
		case <-ticker.C:
		}
	}
}

func (c *call) receiveEvent(message webrtc.DataChannelMessage, now time.Time) {
	var echoed event
	c.mu.Lock()
	defer c.mu.Unlock()
	if !message.IsString || json.Unmarshal(message.Data, &echoed) != nil || echoed.Tag != c.tag {
		c.report.DataChannel.Foreign++
		return
	}
	sentAt, ok := c.pending[echoed.Seq]
	if !ok {
		c.report.DataChannel.Foreign++
		return
	}
	delete(c.pending, echoed.Seq)
	c.report.DataChannel.Echoed++
	c.eventLatency = append(c.eventLatency, float64(now.Sub(sentAt).Microseconds())/1000)
}

// drain waits, after the senders stopped, for what is still in flight: the last frames (up to
// 0.5 s) and the last events (up to 2 s), so that the counts compare like with like.
func (c *call) drain() {
	deadline := time.Now().Add(2 * time.Second)
	audioDeadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		audioDone := c.report.Audio.PacketsReceived >= c.report.Audio.PacketsSent || time.Now().After(audioDeadline)
		eventsDone := len(c.pending) == 0 || !c.report.DataChannel.Opened
		c.mu.Unlock()
		if audioDone && eventsDone {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// finish fills in the derived figures and decides whether the call passed.
func (c *call) finish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := &c.report
	r.Audio.EchoMs = percentilesOf(c.echoLatency)
	r.DataChannel.EchoMs = percentilesOf(c.eventLatency)
	if r.Audio.PacketsSent > 0 {
		r.Audio.EchoRatio = math.Round(float64(r.Audio.PacketsReceived)/float64(r.Audio.PacketsSent)*10000) / 10000
	}
	if !c.lastEcho.IsZero() {
		second := c.callSecond(c.lastEcho)
		r.Audio.LastEchoSecond = &second
	}
	if c.connectedAt.IsZero() {
		r.OK = false
		if len(r.Failures) == 0 {
			r.Failures = append(r.Failures, "never connected")
		}
		return
	}
	if r.Dropped != nil {
		r.Failures = append(r.Failures, fmt.Sprintf("%s connection %s at second %.1f of %g", r.Dropped.Of, r.Dropped.State,
			r.Dropped.Second, r.Seconds))
	}
	if r.Audio.PacketsSent == 0 {
		r.Failures = append(r.Failures, "no audio sent")
	} else if r.Audio.EchoRatio < minimumEchoRatio {
		r.Failures = append(r.Failures, fmt.Sprintf("only %d of %d audio frames echoed", r.Audio.PacketsReceived, r.Audio.PacketsSent))
	}
	if r.Audio.LastEchoSecond == nil {
		r.Failures = append(r.Failures, "no audio echoed")
	} else if until := r.Connected - *r.Audio.LastEchoSecond; r.Dropped == nil && until > maximumFinalSilence.Seconds() {
		r.Failures = append(r.Failures, fmt.Sprintf("echoed audio stopped at second %.1f of %g", *r.Audio.LastEchoSecond, r.Seconds))
	}
	if !r.DataChannel.Opened {
		r.Failures = append(r.Failures, "oai-events never opened")
	} else if r.DataChannel.Echoed < r.DataChannel.Sent || r.DataChannel.Sent == 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d of %d data-channel events echoed", r.DataChannel.Echoed, r.DataChannel.Sent))
	}
	if r.DataChannel.ClosedAt != nil {
		r.Failures = append(r.Failures, fmt.Sprintf("oai-events closed at second %.1f", *r.DataChannel.ClosedAt))
	}
	r.OK = len(r.Failures) == 0
}

// MARK: ICE log → STUN counts

// Pion's ICE agent logs, at trace level, each Binding request it sends ("ping STUN …": checks,
// nominations and keepalives alike) and each request and success response it receives. Matching
// the format strings counts them without a packet capture. They are Pion v2.3's; if a newer ICE
// changes them the counts read 0 (the requests before connecting are never 0, which shows it).
const (
	logRequestSent      = "ping STUN from %s to %s"
	logResponseReceived = "inbound STUN (SuccessResponse) from %s to %s"
	logRequestReceived  = "inbound STUN (Request) from %s to %s"
)

type loggerFactory struct {
	base *logging.DefaultLoggerFactory
	call *call
}

func (f loggerFactory) NewLogger(scope string) logging.LeveledLogger {
	logger := f.base.NewLogger(scope)
	if scope == "ice" {
		return iceLog{LeveledLogger: logger, call: f.call}
	}
	return logger
}

type iceLog struct {
	logging.LeveledLogger
	call *call
}

// Tracef counts, then logs as Pion would (with -log-ice; the line's file:line then names this
// wrapper, not Pion's caller).
func (l iceLog) Tracef(format string, args ...interface{}) {
	l.call.noteICE(format, time.Now())
	l.LeveledLogger.Tracef(format, args...)
}

func (c *call) noteICE(format string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	stun := &c.report.STUN
	connected := !c.connectedAt.IsZero()
	switch format {
	case logRequestSent:
		stun.RequestsSent++
		if connected {
			stun.RequestsAfterConnect++
			if len(stun.RequestSecondsAfter) < 50 {
				stun.RequestSecondsAfter = append(stun.RequestSecondsAfter, c.callSecond(now))
			}
		}
	case logResponseReceived:
		stun.ResponsesReceived++
	case logRequestReceived:
		stun.RequestsReceived++
		if connected {
			stun.RequestsReceivedAfter++
		}
	}
}

// MARK: signaling

var httpClient = &http.Client{Timeout: 10 * time.Second}

// apiKey goes in every request's Authorization header (none when empty).
var apiKey string

func do(method, endpoint, contentType string, body io.Reader) (*http.Response, error) {
	request, err := http.NewRequest(method, endpoint, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		request.Header.Set("Content-Type", contentType)
	}
	if apiKey != "" {
		request.Header.Set("Authorization", "Bearer "+apiKey)
	}
	return httpClient.Do(request)
}

func postOffer(endpoint, sdp string) (location, answer string, err error) {
	response, err := do(http.MethodPost, endpoint, "application/sdp", strings.NewReader(sdp))
	if err != nil {
		return "", "", fmt.Errorf("POST %s: %v", endpoint, err)
	}
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	if err != nil {
		return "", "", err
	}
	if response.StatusCode != http.StatusCreated {
		return "", "", fmt.Errorf("POST %s: HTTP %d: %s", endpoint, response.StatusCode, strings.TrimSpace(string(body)))
	}
	if header := response.Header.Get("Location"); header != "" {
		base, _ := url.Parse(endpoint)
		reference, err := url.Parse(header)
		if err != nil {
			return "", "", fmt.Errorf("bad Location %q", header)
		}
		location = base.ResolveReference(reference).String()
	}
	return location, string(body), nil
}

// endCall reads the server's view of the call (GET Location), then hangs up (DELETE Location).
func endCall(location string) *serverStatus {
	status := &serverStatus{}
	if response, err := do(http.MethodGet, location, "", nil); err != nil {
		status.Text = err.Error()
	} else {
		body, _ := io.ReadAll(response.Body)
		response.Body.Close()
		status.Status = response.StatusCode
		if json.Valid(body) {
			status.Body = body
		} else {
			status.Text = strings.TrimSpace(string(body))
		}
	}
	if response, err := do(http.MethodDelete, location, "", nil); err == nil {
		response.Body.Close()
	}
	return status
}

// MARK: statistics and output

type percentiles struct {
	N   int     `json:"n"`
	Min float64 `json:"min"`
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// percentilesOf uses the nearest rank: p99 of 100 samples is the 99th smallest.
func percentilesOf(samples []float64) *percentiles {
	if len(samples) == 0 {
		return nil
	}
	sorted := append([]float64(nil), samples...)
	sort.Float64s(sorted)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(sorted)))) - 1
		if i < 0 {
			i = 0
		}
		return round3(sorted[i])
	}
	return &percentiles{N: len(sorted), Min: round3(sorted[0]), P50: rank(0.5), P99: rank(0.99), Max: round3(sorted[len(sorted)-1])}
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

func ms(v float64) *float64 { v = round3(v); return &v }

type summary struct {
	Calls       int                     `json:"calls"`
	Passed      int                     `json:"passed"`
	Failed      int                     `json:"failed"`
	SecondsEach float64                 `json:"secondsEach"`
	SetupMs     map[string]*percentiles `json:"setupMs"` // each step, over the calls that reached it
	Audio       struct {
		PacketsSent     int64        `json:"packetsSent"`
		PacketsReceived int64        `json:"packetsReceived"`
		EchoMsP50       *percentiles `json:"echoMsP50"` // the calls' median echo latencies
	} `json:"audio"`
	DataChannel struct {
		Sent   int `json:"sent"`
		Echoed int `json:"echoed"`
	} `json:"dataChannel"`
	STUNRequestsAfterConnected int           `json:"stunRequestsSentAfterConnected"`
	FailedCalls                []*callReport `json:"failedCalls,omitempty"`
}

func summarize(opts *options, results []*callReport) *summary {
	s := &summary{Calls: len(results), SecondsEach: opts.seconds, SetupMs: map[string]*percentiles{}}
	steps := map[string][]float64{}
	add := func(name string, v *float64) {
		if v != nil {
			steps[name] = append(steps[name], *v)
		}
	}
	var echoMedians []float64
	for _, r := range results {
		if r.OK {
			s.Passed++
		} else {
			s.Failed++
			s.FailedCalls = append(s.FailedCalls, r)
		}
		add("answer", r.Setup.Answer)
		add("iceConnected", r.Setup.ICEConnected)
		add("connected", r.Setup.Connected)
		add("firstEchoedAudio", r.Setup.FirstEchoedAudio)
		add("dataChannelOpen", r.Setup.DataChannelOpen)
		s.Audio.PacketsSent += r.Audio.PacketsSent
		s.Audio.PacketsReceived += r.Audio.PacketsReceived
		if r.Audio.EchoMs != nil {
			echoMedians = append(echoMedians, r.Audio.EchoMs.P50)
		}
		s.DataChannel.Sent += r.DataChannel.Sent
		s.DataChannel.Echoed += r.DataChannel.Echoed
		s.STUNRequestsAfterConnected += r.STUN.RequestsAfterConnect
	}
	for name, values := range steps {
		s.SetupMs[name] = percentilesOf(values)
	}
	s.Audio.EchoMsP50 = percentilesOf(echoMedians)
	return s
}

var stepOrder = []string{"answer", "iceConnected", "connected", "firstEchoedAudio", "dataChannelOpen"}

func stepValue(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.1f", *v)
}

func (r *callReport) oneLine() string {
	verdict := "ok"
	if !r.OK {
		verdict = "FAILED: " + strings.Join(r.Failures, "; ")
	}
	return fmt.Sprintf("answer %s, ice %s, connected %s, first echo %s, channel %s ms; audio %d/%d; events %d/%d; %s",
		stepValue(r.Setup.Answer), stepValue(r.Setup.ICEConnected), stepValue(r.Setup.Connected),
		stepValue(r.Setup.FirstEchoedAudio), stepValue(r.Setup.DataChannelOpen),
		r.Audio.PacketsReceived, r.Audio.PacketsSent, r.DataChannel.Echoed, r.DataChannel.Sent, verdict)
}

func (r *callReport) printText(w io.Writer) {
	fmt.Fprintf(w, "call %d (%s): %s\n", r.Call, r.Location, r.oneLine())
	fmt.Fprintf(w, "connected for %.1f s of %g; STUN requests sent %d (%d after connecting), received %d\n",
		r.Connected, r.Seconds, r.STUN.RequestsSent, r.STUN.RequestsAfterConnect, r.STUN.RequestsReceived)
	for _, change := range r.States {
		fmt.Fprintf(w, "  %8.1f ms  %s %s\n", change.Ms, change.Of, change.State)
	}
}

func (s *summary) printText(w io.Writer) {
	fmt.Fprintf(w, "%d calls of %g s: %d passed, %d failed\n", s.Calls, s.SecondsEach, s.Passed, s.Failed)
	for _, name := range stepOrder {
		if p := s.SetupMs[name]; p != nil {
			fmt.Fprintf(w, "  %-17s p50 %7.1f ms  p99 %7.1f ms  max %7.1f ms  (n=%d)\n", name, p.P50, p.P99, p.Max, p.N)
		}
	}
	fmt.Fprintf(w, "audio %d/%d echoed; events %d/%d; STUN requests after connecting: %d\n", s.Audio.PacketsReceived,
		s.Audio.PacketsSent, s.DataChannel.Echoed, s.DataChannel.Sent, s.STUNRequestsAfterConnected)
	for _, r := range s.FailedCalls {
		fmt.Fprintf(w, "  call %d: %s\n", r.Call, strings.Join(r.Failures, "; "))
	}
}
