// pionecho: the reference server `make bench-transceiver` runs side by side with Parley. It is
// what a Go team would write on Pion for the same job: ICE lite, every session on one UDP port
// (UDPMux), Pion's default interceptors (NACK, RTCP reports, TWCC), each received RTP packet
// written back on an outgoing track, each data-channel message sent back. It answers
// `POST <any path>` with an SDP offer body like Parley's signaling (201 + the answer).
// Benchmark code only, never part of the product.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"

	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v3"
)

var sessions int64

func main() {
	httpAddress := flag.String("http", "127.0.0.1:8090", "signaling address")
	mediaAddress := flag.String("media", "127.0.0.1:8091", "the one UDP address every session uses")
	readBuffer := flag.Int("socket-buffer", 4<<20, "UDP socket receive and send buffers in bytes (Parley's media workers take 4 MiB)")
	flag.Parse()

	udp, err := net.ListenUDP("udp4", mustResolve(*mediaAddress))
	if err != nil {
		log.Fatal(err)
	}
	setBuffers(udp, *readBuffer)
	host := udp.LocalAddr().(*net.UDPAddr).IP.String()

	settings := webrtc.SettingEngine{}
	settings.SetLite(true)
	settings.SetICEUDPMux(webrtc.NewICEUDPMux(nil, udp))
	settings.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	settings.SetIncludeLoopbackCandidate(true)
	settings.SetNAT1To1IPs([]string{host}, webrtc.ICECandidateTypeHost)
	settings.SetIPFilter(func(ip net.IP) bool { return ip.String() == host })

	media := &webrtc.MediaEngine{}
	if err := media.RegisterDefaultCodecs(); err != nil {
		log.Fatal(err)
	}
	interceptors := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(media, interceptors); err != nil {
		log.Fatal(err)
	}
	api := webrtc.NewAPI(webrtc.WithSettingEngine(settings), webrtc.WithMediaEngine(media),
		webrtc.WithInterceptorRegistry(interceptors))

	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "ok %d\n", atomic.LoadInt64(&sessions))
	})
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST an SDP offer", http.StatusMethodNotAllowed)
			return
		}
		offer, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		answer, err := answer(api, string(offer))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/sdp")
		w.Header().Set("Location", r.URL.Path)
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, answer)
	})
	log.Printf("pionecho: signaling on %s, media on %s", *httpAddress, udp.LocalAddr())
	log.Fatal(http.ListenAndServe(*httpAddress, nil))
}

func answer(api *webrtc.API, offer string) (string, error) {
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", err
	}
	output, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus}, "audio", "pionecho")
	if err != nil {
		return "", err
	}
	sender, err := pc.AddTrack(output)
	if err != nil {
		return "", err
	}
	go func() {
		buffer := make([]byte, 1500)
		for {
			if _, _, err := sender.Read(buffer); err != nil {
				return
			}
		}
	}()
	pc.OnTrack(func(track *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		buffer := make([]byte, 1500)
		for {
			n, _, err := track.Read(buffer)
			if err != nil {
				return
			}
			if _, err := output.Write(buffer[:n]); err != nil {
				return
			}
		}
	})
	pc.OnDataChannel(func(channel *webrtc.DataChannel) {
		channel.OnMessage(func(message webrtc.DataChannelMessage) {
			if message.IsString {
				channel.SendText(string(message.Data))
			} else {
				channel.Send(message.Data)
			}
		})
	})
	pc.OnConnectionStateChange(func(state webrtc.PeerConnectionState) {
		switch state {
		case webrtc.PeerConnectionStateConnected:
			atomic.AddInt64(&sessions, 1)
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateDisconnected:
			pc.Close()
		case webrtc.PeerConnectionStateClosed:
			atomic.AddInt64(&sessions, -1)
		}
	})
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		pc.Close()
		return "", err
	}
	local, err := pc.CreateAnswer(nil)
	if err != nil {
		pc.Close()
		return "", err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(local); err != nil {
		pc.Close()
		return "", err
	}
	<-gathered
	return pc.LocalDescription().SDP, nil
}

// setBuffers gives the socket the same buffers Parley's media workers take: SO_RCVBUFFORCE
// (root) past net.core.rmem_max, else as much as SO_RCVBUF allows. At the default ~200 KiB Pion
// drops packets from about 400 calls.
func setBuffers(udp *net.UDPConn, bytes int) {
	raw, err := udp.SyscallConn()
	if err == nil {
		raw.Control(func(fd uintptr) {
			if syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, bytes) != nil {
				udp.SetReadBuffer(bytes)
			}
			if syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUFFORCE, bytes) != nil {
				udp.SetWriteBuffer(bytes)
			}
		})
	}
}

func mustResolve(address string) *net.UDPAddr {
	resolved, err := net.ResolveUDPAddr("udp4", address)
	if err != nil {
		log.Fatal(err)
	}
	return resolved
}
