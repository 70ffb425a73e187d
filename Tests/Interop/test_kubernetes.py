"""deploy/ run for real, without Kubernetes: the single-cluster overlay is rendered with
`kubectl kustomize`, and every container of every Deployment and StatefulSet is started the way a
kubelet would start it — its exact command and arguments, `$(VAR)` expanded from its environment,
the downward API (pod IP, CPU limit), ConfigMap and Secret values filled in, Secret volumes at their
mount paths, its user and group, no capabilities, a read-only root — as a "pod" in a network
namespace of its own on the pod network the overlay names. Services are what kube-proxy makes of
them (nftables DNAT to the ready pods: readiness from each pod's own readinessProbe), the relay's
LoadBalancer keeps the client's address (externalTrafficPolicy: Local), and a small ingress serves
the app's page and passes /v1 to the signaling Service. Chromium, in a namespace of its own on the
"internet" side, calls through all of it. So a wrong flag, port, env name or path in a manifest
fails here.

Then a transceiver pod is deleted the way Kubernetes deletes one: out of the Service's endpoints,
its preStop hook run, SIGTERM, the grace period. Its call goes on until it hangs up; a new call
goes to the other pod; the drained pod exits by itself once its call has ended.

What is not exercised: the Kubernetes API itself (scheduling, the HPA, the PDB, NetworkPolicies).
scripts/check-manifests.sh validates those objects against Kubernetes' schemas.
"""
import base64
import http.client
import http.server
import ipaddress
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
import yaml
from selenium import webdriver

from conftest import PARLEY, ROOT, require
from test_chromium import chromium_options, wait_for

# What the images hold, as the Containerfile and the Redis image define them: the path the
# manifests name mapped to what runs here.
PARLEY_IMAGE_PATH = "/usr/local/bin/parley"
IMAGES = {
    # `make test` sets PARLEY_IMAGE_BIN to the static release build (scripts/release-build.sh): the
    # image's own build step.
    "ghcr.io/parley-dev/parley": {"binary": os.environ.get("PARLEY_IMAGE_BIN", PARLEY), "at": PARLEY_IMAGE_PATH},
    "redis": {"entrypoint": [shutil.which("redis-server") or "/usr/bin/redis-server"]},
}
CLIENT, CLIENT_GATEWAY = "192.0.2.2", "192.0.2.1"
TAG = f"k{os.getpid() % 100000}"


def run(*command, check=True, input=None):
    return subprocess.run(command, check=check, capture_output=True, text=True, input=input)


def render(overlay, scratch):
    """The overlay as `kubectl kustomize` renders it (with fresh keys from deploy/make-secrets.sh in
    a scratch copy), as a list of objects."""
    shutil.copytree(os.path.join(ROOT, "deploy"), scratch / "deploy")
    shutil.rmtree(scratch / "deploy" / "overlays" / overlay / "secrets", ignore_errors=True)
    run(str(scratch / "deploy" / "make-secrets.sh"), f"overlays/{overlay}")
    rendered = run("kubectl", "kustomize", str(scratch / "deploy" / "overlays" / overlay)).stdout
    return [document for document in yaml.safe_load_all(rendered) if document]


def quantity(text):
    """A Kubernetes quantity ("2", "500m", "256Mi") as a number."""
    text = str(text)
    suffixes = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in suffixes.items():
        if text.endswith(suffix):
            return float(text[:-len(suffix)]) * factor
    return float(text)


def expand(text, env):
    """Kubernetes' `$(VAR)` expansion: a defined variable is replaced, `$$` is a `$`, anything else
    stays as written (which the caller then refuses)."""
    return re.sub(r"\$(\$|\(([A-Za-z_][A-Za-z0-9_]*)\))",
                  lambda m: "$" if m.group(1) == "$" else env.get(m.group(2), m.group(0)), text)


class Objects:
    def __init__(self, documents):
        self.documents = documents
        self.namespace = next(d["metadata"].get("namespace") for d in documents if d["kind"] == "Deployment")

    def of(self, kind):
        return [d for d in self.documents if d["kind"] == kind]

    def get(self, kind, name):
        found = [d for d in self.of(kind) if d["metadata"]["name"] == name]
        assert found, f"the overlay renders no {kind} {name}"
        return found[0]

    def config_value(self, name, key):
        return self.get("ConfigMap", name)["data"][key]

    def secret_value(self, name, key):
        secret = self.get("Secret", name)
        if key in secret.get("stringData", {}):
            return secret["stringData"][key]
        return base64.b64decode(secret["data"][key]).decode()


class Pod:
    """A workload's pod: a network namespace with one address on the pod network, running its one
    container (the manifests have one per pod) as the kubelet would."""

    def __init__(self, cluster, workload, index, address):
        self.cluster, self.workload, self.index = cluster, workload, index
        self.name = f"{workload['metadata']['name']}-{index}"
        self.labels = workload["spec"]["template"]["metadata"]["labels"]
        self.spec = workload["spec"]["template"]["spec"]
        assert len(self.spec["containers"]) == 1, f"{self.name}: the test runs one container per pod"
        self.container = self.spec["containers"][0]
        self.address = address
        self.netns = f"{cluster.tag}-{self.name}"
        self.terminating = False
        self.process = None
        self.log_path = cluster.dir / f"{self.name}.log"
        self.files = cluster.dir / "pods" / self.name

    # The container's ports by name (probes and Services name them).
    def port(self, reference):
        if isinstance(reference, int):
            return reference
        for port in self.container.get("ports", []):
            if port["name"] == reference:
                return port["containerPort"]
        raise AssertionError(f"{self.name}: no container port named {reference!r}")

    def environment(self):
        objects, env = self.cluster.objects, {}
        for variable in self.container.get("env", []):
            name = variable["name"]
            if "value" in variable:
                env[name] = expand(str(variable["value"]), env)
                continue
            source = variable["valueFrom"]
            if "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                env[name] = {"status.podIP": self.address, "metadata.name": self.name,
                             "metadata.namespace": objects.namespace}[path]
            elif "resourceFieldRef" in source:
                reference = source["resourceFieldRef"]
                assert reference.get("containerName", self.container["name"]) == self.container["name"]
                kind, resource = reference["resource"].split(".")
                value = quantity(self.container["resources"][kind][resource])
                env[name] = str(math.ceil(value / quantity(reference.get("divisor", "1"))))
            elif "configMapKeyRef" in source:
                reference = source["configMapKeyRef"]
                env[name] = objects.config_value(reference["name"], reference["key"])
            elif "secretKeyRef" in source:
                reference = source["secretKeyRef"]
                env[name] = objects.secret_value(reference["name"], reference["key"])
            else:
                raise AssertionError(f"{self.name}: env {name} comes from something the test does not fill in: {source}")
        return env

    def command(self, env):
        image = self.container["image"].rsplit(":", 1)[0]
        assert image in IMAGES, f"{self.name}: image {self.container['image']} is not one the test knows"
        known = IMAGES[image]
        if "command" in self.container:
            command = [expand(part, env) for part in self.container["command"]]
            assert command[0] == known["at"], f"{self.name}: runs {command[0]}, the image has {known['at']}"
        else:
            command = list(known["entrypoint"])
        arguments = [expand(str(argument), env) for argument in self.container.get("args", [])]
        unresolved = [argument for argument in command + arguments if "$(" in argument]
        assert not unresolved, f"{self.name}: no env variable for {unresolved} (a misspelt name in the manifest?)"
        return command + arguments

    def volumes(self):
        """{mount path: {file name: content}} of the container's Secret and ConfigMap volumes."""
        objects, mounted = self.cluster.objects, {}
        volumes = {volume["name"]: volume for volume in self.spec.get("volumes", [])}
        for mount in self.container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "secret" in volume:
                secret = objects.get("Secret", volume["secret"]["secretName"])
                files = {key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()}
                files.update(secret.get("stringData", {}))
            elif "configMap" in volume:
                files = dict(objects.get("ConfigMap", volume["configMap"]["name"])["data"])
            else:
                raise AssertionError(f"{self.name}: volume {mount['name']} is of a kind the test does not mount")
            assert mount["mountPath"].startswith("/etc/"), f"{self.name}: the test mounts volumes under /etc only"
            mounted[mount["mountPath"]] = files
        return mounted

    def security(self):
        """setpriv arguments for the pod's and the container's security contexts."""
        pod, container = self.spec.get("securityContext", {}), self.container.get("securityContext", {})
        user = container.get("runAsUser", pod.get("runAsUser"))
        group = container.get("runAsGroup", pod.get("runAsGroup", user))
        if container.get("runAsNonRoot", pod.get("runAsNonRoot")):
            assert user not in (None, 0), f"{self.name}: runAsNonRoot without a non-root runAsUser"
        arguments = []
        if user is not None:
            arguments += [f"--reuid={user}", f"--regid={group}", "--clear-groups"]
        capabilities = container.get("capabilities", {})
        assert capabilities.get("drop") == ["ALL"] and not capabilities.get("add"), f"{self.name}: capabilities {capabilities}"
        arguments += ["--inh-caps=-all", "--bounding-set=-all"]
        if container.get("allowPrivilegeEscalation") is False:
            arguments.append("--no-new-privs")
        return arguments, bool(container.get("readOnlyRootFilesystem"))

    def launch_script(self, argv, env):
        """Mounts what the container sees (its volumes and /etc/hosts over an overlay of /etc, the
        image's binary at its path), makes the root read-only if asked, drops to its user, execs."""
        security, read_only = self.security()
        etc = self.files / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        for path, files in self.volumes().items():
            directory = etc / os.path.relpath(path, "/etc")
            directory.mkdir(parents=True, exist_ok=True)
            for name, content in files.items():
                (directory / name).write_text(content)
                (directory / name).chmod(0o644)
        (etc / "hosts").write_text(self.cluster.hosts())
        lines = [
            "set -e",
            f"mount -t tmpfs tmpfs {self.files}/mnt",
            f"mkdir -p {self.files}/mnt/etc-upper {self.files}/mnt/etc-work {self.files}/mnt/bin-upper {self.files}/mnt/bin-work",
            f"cp -a {etc}/. {self.files}/mnt/etc-upper/",
            f"mount -t overlay overlay -o lowerdir=/etc,upperdir={self.files}/mnt/etc-upper,workdir={self.files}/mnt/etc-work /etc",
        ]
        image = self.container["image"].rsplit(":", 1)[0]
        read_only_mounts = ["/etc", "/"]
        if "binary" in IMAGES[image]:
            at = IMAGES[image]["at"]
            lines += [
                f"mount -t overlay overlay -o lowerdir={os.path.dirname(at)},upperdir={self.files}/mnt/bin-upper,"
                f"workdir={self.files}/mnt/bin-work {os.path.dirname(at)}",
                f"touch {at}", f"mount --bind {IMAGES[image]['binary']} {at}",
            ]
            read_only_mounts.insert(0, os.path.dirname(at))
        if read_only:
            lines += [f"mount -o remount,bind,ro {path}" for path in read_only_mounts]
        quoted = " ".join("'" + part.replace("'", "'\\''") + "'" for part in argv)
        lines.append("cd /")
        lines.append("exec env -i " + " ".join(f"'{k}={v}'" for k, v in env.items()) + " setpriv "
                     + " ".join(security) + " -- " + quoted)
        return "\n".join(lines)

    def start(self):
        env = self.environment()
        self.argv = self.command(env)
        (self.files / "mnt").mkdir(parents=True, exist_ok=True)
        script = self.launch_script(self.argv, env)
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(["ip", "netns", "exec", self.netns, "unshare", "--mount", "--propagation", "private",
                                         "/bin/sh", "-c", script], stdout=self.log, stderr=subprocess.STDOUT)

    def exec(self, command):
        """`kubectl exec`: a command in the pod's network (what a preStop exec hook does)."""
        return subprocess.run(["ip", "netns", "exec", self.netns, *command], capture_output=True, text=True, timeout=120)

    def probe(self):
        """The container's readinessProbe, as the kubelet runs it."""
        probe = self.container.get("readinessProbe")
        if self.process is None or self.process.poll() is not None:
            return False
        if probe is None:
            return True
        try:
            if "httpGet" in probe:
                get = probe["httpGet"]
                url = f"http://{self.address}:{self.port(get['port'])}{get.get('path', '/')}"
                with urllib.request.urlopen(url, timeout=probe.get("timeoutSeconds", 1)) as response:
                    return 200 <= response.status < 400
            if "tcpSocket" in probe:
                with socket.create_connection((self.address, self.port(probe["tcpSocket"]["port"])), timeout=1):
                    return True
        except (OSError, urllib.error.HTTPError):
            return False
        raise AssertionError(f"{self.name}: a readinessProbe the test does not run: {probe}")

    def logs(self):
        return self.log_path.read_text() if self.log_path.exists() else ""


class Internet:
    """The client's side: a namespace (192.0.2.2) linked to the node (192.0.2.1), which routes it
    to the load balancers' addresses."""

    def __init__(self):
        self.namespace = f"{TAG}-client"
        self.link = f"{TAG}c0"
        run("ip", "netns", "add", self.namespace)
        run("ip", "link", "add", self.link, "type", "veth", "peer", "name", f"{TAG}c1")
        run("ip", "link", "set", f"{TAG}c1", "netns", self.namespace)
        run("ip", "addr", "add", f"{CLIENT_GATEWAY}/24", "dev", self.link)
        run("ip", "link", "set", self.link, "up")
        for command in (["ip", "link", "set", "lo", "up"], ["ip", "link", "set", f"{TAG}c1", "up"],
                        ["ip", "addr", "add", f"{CLIENT}/24", "dev", f"{TAG}c1"],
                        ["ip", "route", "add", "default", "via", CLIENT_GATEWAY]):
            run("ip", "netns", "exec", self.namespace, *command)
        run("sysctl", "-qw", "net.ipv4.ip_forward=1")

    def stop(self):
        run("ip", "netns", "delete", self.namespace, check=False)
        run("ip", "link", "delete", self.link, check=False)


class Cluster:
    """The overlay's workloads as pods on one "node" (this namespace), its Services as nftables
    rules and an ingress. Several clusters may share the node (the regions of a fleet): each has its
    own pod network (its overlay's), Service network and name. `load_balancers`: external addresses
    of LoadBalancer Services besides the relays' public one. `egress`: the address this cluster's
    pods' traffic to `egress_to` leaves from (a node or NAT gateway address; SNAT)."""

    def __init__(self, tmp, internet, overlay="single-cluster", name="a", service_network="10.96.0.0/16",
                 ingress_port=8000, load_balancers=None, egress=None, egress_to=None, region_header=None):
        self.tmp = tmp
        self.internet, self.client_ns = internet, internet.namespace
        self.tag, self.table = f"{TAG}{name}", f"parley_{name}"
        self.service_network = ipaddress.ip_network(service_network)
        self.ingress_port, self.region_header = ingress_port, region_header
        self.egress, self.egress_to = egress, egress_to
        self.dir = tmp / name
        self.dir.mkdir(exist_ok=True)
        self.objects = Objects(render(overlay, self.dir))
        self.pod_network = ipaddress.ip_network(self.objects.config_value("parley-cluster", "pod-network"))
        public = self.objects.config_value("parley-cluster", "public-relay")
        self.public_host, self.public_port = public.rsplit(":", 1)[0], int(public.rsplit(":", 1)[1])
        self.gateway = str(self.pod_network.network_address + 1)
        self.bridge = f"{self.tag}br"
        self.load_balancers = {"parley-relay": self.public_host, **(load_balancers or {})}
        self.pods, self.links, self.namespaces = [], [], []
        self.cluster_ips = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.endpoints = {}

    # --- the node's network -------------------------------------------------------------------
    def network(self):
        run("ip", "link", "add", self.bridge, "type", "bridge")
        self.links.append(self.bridge)
        run("ip", "addr", "add", f"{self.gateway}/{self.pod_network.prefixlen}", "dev", self.bridge)
        if self.egress:
            run("ip", "addr", "add", f"{self.egress}/32", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        # Service IPs are virtual: traffic to them is DNATed before it is routed any further.
        run("ip", "route", "add", str(self.service_network), "dev", self.bridge)

    def add_pod(self, workload, index):
        address = str(self.pod_network.network_address + 10 + len(self.pods))
        pod = Pod(self, workload, index, address)
        run("ip", "netns", "add", pod.netns)
        self.namespaces.append(pod.netns)
        host_side = f"{self.tag}v{len(self.pods)}"
        run("ip", "link", "add", host_side, "type", "veth", "peer", "name", "eth0", "netns", pod.netns)
        self.links.append(host_side)
        run("ip", "link", "set", host_side, "master", self.bridge)
        run("ip", "link", "set", host_side, "up")
        for command in (["ip", "link", "set", "lo", "up"], ["ip", "link", "set", "eth0", "up"],
                        ["ip", "addr", "add", f"{address}/{self.pod_network.prefixlen}", "dev", "eth0"],
                        ["ip", "route", "add", "default", "via", self.gateway]):
            run("ip", "netns", "exec", pod.netns, *command)
        self.pods.append(pod)
        return pod

    def hosts(self):
        """Cluster DNS as /etc/hosts: a Service's name (short and qualified) → its ClusterIP, or a
        headless Service's → its pods."""
        lines = ["127.0.0.1 localhost"]
        namespace = self.objects.namespace
        for service in self.objects.of("Service"):
            name = service["metadata"]["name"]
            names = f"{name} {name}.{namespace} {name}.{namespace}.svc {name}.{namespace}.svc.cluster.local"
            if service["spec"].get("clusterIP") == "None":
                for pod in self.selected(service):
                    lines.append(f"{pod.address} {names}")
            elif name in self.cluster_ips:
                lines.append(f"{self.cluster_ips[name]} {names}")
        return "\n".join(lines) + "\n"

    def selected(self, service):
        selector = service["spec"]["selector"]
        return [pod for pod in self.pods if all(pod.labels.get(k) == v for k, v in selector.items())]

    # --- kube-proxy ---------------------------------------------------------------------------
    def rules(self):
        """nftables DNAT for every Service with ready endpoints: ClusterIP ports, and the relay's
        LoadBalancer on the public address (hashing each client flow to one relay pod; no SNAT, so
        the pod sees the client's own address, as externalTrafficPolicy: Local does)."""
        lines = []
        for service in self.objects.of("Service"):
            name, spec = service["metadata"]["name"], service["spec"]
            if spec.get("clusterIP") == "None":
                continue
            ready = self.endpoints.get(name, [])
            for port in spec["ports"]:
                protocol = port.get("protocol", "TCP").lower()
                targets = [(pod.address, pod.port(port.get("targetPort", port["port"]))) for pod in ready]
                addresses = [self.cluster_ips[name]]
                if spec.get("type") == "LoadBalancer":
                    assert name in self.load_balancers, f"no external address for the LoadBalancer {name}"
                    addresses.append(self.load_balancers[name])
                for address in addresses:
                    match = f"ip daddr {address} {protocol} dport {port['port']}"
                    if not targets:
                        continue  # no endpoints: nothing answers (kube-proxy rejects; a timeout here)
                    table = ", ".join(f"{i} : {host} . {target}" for i, (host, target) in enumerate(targets))
                    lines.append(f"{match} dnat ip to jhash ip saddr . {protocol} sport mod {len(targets)} map {{ {table} }}")
        return lines

    def sync(self):
        """The endpoints controller: each Service's ready, not terminating pods; the rules rewritten
        when they change."""
        with self.lock:
            changed = False
            for service in self.objects.of("Service"):
                name = service["metadata"]["name"]
                ready = [pod for pod in self.selected(service) if not pod.terminating and pod.probe()]
                if [p.name for p in ready] != [p.name for p in self.endpoints.get(name, [])]:
                    self.endpoints[name] = ready
                    changed = True
            if changed:
                script = f"flush chain ip {self.table} services\n" + "".join(
                    f"add rule ip {self.table} services {rule}\n" for rule in self.rules())
                run("nft", "-f", "-", input=script)

    def controller(self):
        while not self.stopped.wait(0.5):
            try:
                self.sync()
            except Exception as error:  # noqa: BLE001 — keep reconciling; the test's assertions report
                print(f"endpoints controller: {error}")

    def start(self):
        require(shutil.which("kubectl") is not None, "kubectl renders the manifests (scripts/install-deps.sh test)")
        self.network()
        for offset, service in enumerate(self.objects.of("Service")):
            if service["spec"].get("clusterIP") != "None":
                self.cluster_ips[service["metadata"]["name"]] = str(self.service_network.network_address + 10 + offset)
        snat = f"ip saddr {self.pod_network} ip daddr {self.egress_to} snat to {self.egress};" if self.egress else ""
        run("nft", "-f", "-", input=f"""
            table ip {self.table} {{
              chain services {{ }}
              chain prerouting {{ type nat hook prerouting priority -100; jump services; }}
              chain output {{ type nat hook output priority -100; jump services; }}
              chain postrouting {{ type nat hook postrouting priority 100; {snat} }}
            }}""")
        # Redis first (the relays' route store), then relays and transceivers, as their readiness allows.
        workloads = sorted(self.objects.of("StatefulSet") + self.objects.of("Deployment"),
                           key=lambda w: {"StatefulSet": 0}.get(w["kind"], 1))
        for workload in workloads:
            for index in range(workload["spec"].get("replicas", 1)):
                self.add_pod(workload, index)
        for workload in workloads:
            pods = [pod for pod in self.pods if pod.workload is workload]
            for pod in pods:
                pod.start()
            deadline = time.time() + 30
            while not all(pod.probe() for pod in pods):
                for pod in pods:
                    assert pod.process.poll() is None, f"{pod.name} exited ({pod.process.returncode}):\n{pod.logs()}"
                assert time.time() < deadline, "not ready in 30 s: " + ", ".join(p.name for p in pods if not p.probe())
                time.sleep(0.2)
        self.sync()
        threading.Thread(target=self.controller, daemon=True).start()
        self.ingress = Ingress(self)
        return self

    def pods_of(self, name):
        return [pod for pod in self.pods if pod.workload["metadata"]["name"] == name]

    def delete(self, pod):
        """What deleting a pod does: it leaves its Services' endpoints at once (terminating), the
        kubelet runs its preStop hook, then sends SIGTERM; SIGKILL after the grace period."""
        pod.terminating = True
        self.sync()
        hook = pod.container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
        started = time.monotonic()
        if hook:
            result = pod.exec(hook)
            assert result.returncode == 0, f"{pod.name}: preStop {hook} failed: {result.stderr}"
        pod.prestop_seconds = time.monotonic() - started
        pod.grace = pod.spec.get("terminationGracePeriodSeconds", 30)
        pod.process.send_signal(signal.SIGTERM)
        pod.terminated_at = time.monotonic()

    def stop(self):
        self.stopped.set()
        if getattr(self, "ingress", None):
            self.ingress.stop()
        for pod in self.pods:
            if pod.process and pod.process.poll() is None:
                pod.process.kill()
                pod.process.wait()
        run("nft", "delete", "table", "ip", self.table, check=False)
        for namespace in self.namespaces:
            run("ip", "netns", "delete", namespace, check=False)
        run("ip", "route", "delete", str(self.service_network), check=False)
        for link in self.links:
            run("ip", "link", "delete", link, check=False)


APP_PAGE = """<!doctype html><meta charset="utf-8"><title>an app on Parley</title>
<script>
// What an app's page does: a client secret from its server (here in the URL), an offer to Parley's
// signaling through the app's ingress, the answer, audio and the oai-events channel.
const secret = new URLSearchParams(location.search).get("client_secret");
const headers = { "Authorization": "Bearer " + secret };
window.parley = { state: "new", channelState: "none", callId: null, error: null, stats: {} };
async function call() {
  const pc = new RTCPeerConnection();
  window.pc = pc;
  pc.onconnectionstatechange = () => { window.parley.state = pc.connectionState; };
  const microphone = await navigator.mediaDevices.getUserMedia({ audio: true });
  microphone.getTracks().forEach(track => pc.addTrack(track, microphone));
  const channel = pc.createDataChannel("oai-events");
  window.channel = channel;
  channel.onopen = () => { window.parley.channelState = "open"; };
  channel.onclose = () => { window.parley.channelState = "closed"; };
  await pc.setLocalDescription(await pc.createOffer());
  const response = await fetch("/v1/realtime/calls", { method: "POST", body: pc.localDescription.sdp,
                                                       headers: { ...headers, "Content-Type": "application/sdp" } });
  if (response.status !== 201) { window.parley.error = response.status + " " + await response.text(); return; }
  window.parley.callId = response.headers.get("Location").split("/").pop();
  window.parley.answer = await response.text();
  await pc.setRemoteDescription({ type: "answer", sdp: window.parley.answer });
  setInterval(async () => {
    const stats = await pc.getStats();
    stats.forEach(s => {
      if (s.type === "inbound-rtp" && s.kind === "audio") window.parley.stats.packetsReceived = s.packetsReceived;
      if (s.type === "transport" && s.selectedCandidatePairId) {
        const pair = stats.get(s.selectedCandidatePairId);
        const remote = pair && stats.get(pair.remoteCandidateId);
        if (remote) window.parley.stats.remote = remote.address + ":" + remote.port + "/" + remote.protocol;
      }
    });
  }, 200);
}
window.hangup = async () => {
  const response = await fetch("/v1/realtime/calls/" + window.parley.callId, { method: "DELETE", headers });
  window.parley.hangup = response.status;
  window.pc.close();
  window.parley.state = "closed";
};
call().catch(error => { window.parley.error = String(error); });
</script>"""


class Ingress:
    """The app's ingress on the node's internet side: its page at /, and /v1 passed to the
    signaling Service (new connection per request, as a proxy balances them), with the client's
    address in X-Forwarded-For."""

    def __init__(self, cluster):
        service = cluster.objects.get("Service", "parley-transceiver")
        upstream = (cluster.cluster_ips["parley-transceiver"], service["spec"]["ports"][0]["port"])

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def relay(self):
                if not self.path.startswith("/v1/"):
                    body = APP_PAGE.encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                connection = http.client.HTTPConnection(*upstream, timeout=15)
                forwarded = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
                forwarded["X-Forwarded-For"] = self.client_address[0]
                if cluster.region_header:
                    # The edge's word for where the client is (GeoDNS, an anycast edge).
                    forwarded["X-Parley-Region"] = cluster.region_header
                connection.request(self.command, self.path, body=body, headers=forwarded)
                answer = connection.getresponse()
                content = answer.read()
                self.send_response(answer.status)
                for name in ("Content-Type", "Location", "Retry-After"):
                    if answer.getheader(name):
                        self.send_header(name, answer.getheader(name))
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)
                connection.close()

            do_GET = do_POST = do_PATCH = do_DELETE = relay

        self.server = http.server.ThreadingHTTPServer((CLIENT_GATEWAY, cluster.ingress_port), Handler)
        self.base = f"http://{CLIENT_GATEWAY}:{cluster.ingress_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def print_pods(cluster):
    for pod in cluster.pods:
        print(f"--- {cluster.tag} {pod.name} ({pod.address}): {' '.join(getattr(pod, 'argv', []))}\n{pod.logs()[-3000:]}")


@pytest.fixture
def cluster(tmp_path):
    require(os.geteuid() == 0, "pods need network namespaces and mounts (scripts/interop.sh runs as root)")
    internet = Internet()
    cluster = Cluster(tmp_path, internet)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
        internet.stop()
        print_pods(cluster)


class Browser:
    """Chromium in the client's namespace (its chromedriver listens there; the test drives it
    across the node's link)."""

    def __init__(self, cluster):
        self.port = 9515
        self.driver_process = subprocess.Popen(
            ["ip", "netns", "exec", cluster.client_ns, shutil.which("chromedriver") or "/usr/bin/chromedriver",
             f"--port={self.port}", f"--allowed-ips={CLIENT_GATEWAY}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while True:
            try:
                urllib.request.urlopen(f"http://{CLIENT}:{self.port}/status", timeout=1).read()
                break
            except OSError:
                assert time.time() < deadline, "chromedriver did not start in the client namespace"
                time.sleep(0.2)
        self.drivers = []

    def open(self, url):
        # The app is on the ingress's address, not localhost: a secure context only by this flag.
        options = chromium_options(f"--unsafely-treat-insecure-origin-as-secure={url.split('/?')[0]}", loopback=False)
        driver = webdriver.Remote(command_executor=f"http://{CLIENT}:{self.port}", options=options)
        self.drivers.append(driver)
        driver.get(url)
        return driver

    def call(self, ingress, cluster, what, seconds=20, audio=False):
        """The app's page through `ingress` with a fresh client secret of `cluster`: the driver and
        the page's state once connected (with `audio`: once oai-events is open and 100 packets came)."""
        driver = self.open(f"{ingress.base}/?client_secret={client_secret(cluster)}")
        state = wait_for(driver, lambda s: s["state"] == "connected" or s["error"], seconds, what)
        assert state["error"] is None, state
        if audio:
            wait_for(driver, lambda s: s["channelState"] == "open" and s["stats"].get("packetsReceived", 0) >= 100, 20,
                     f"audio and oai-events ({what})")
        return driver, state

    def close(self):
        for driver in self.drivers:
            try:
                driver.quit()
            except Exception:  # noqa: BLE001
                pass
        self.driver_process.kill()
        self.driver_process.wait()


def api(cluster, method, path, body=None, key=None, pod=None):
    """A request with the app's API key: through the ingress, or straight to one pod."""
    key = key or cluster.objects.secret_value("parley-api-keys", "keys").split()[0]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    base = cluster.ingress.base
    if pod is not None:
        base = f"http://{pod.address}:{pod.port('http')}"
    request = urllib.request.Request(base + path, data=body.encode() if body else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def client_secret(cluster):
    import json
    status, text = api(cluster, "POST", "/v1/realtime/client_secrets",
                       json.dumps({"expires_after": {"anchor": "created_at", "seconds": 600}, "session": {}}))
    assert status == 200, text
    return json.loads(text)["value"]


def owner_of(cluster, call_id):
    """The pod that made the call (its log says so; any pod would answer for it)."""
    owners = [pod for pod in cluster.pods_of("parley-transceiver")
              if any("call created" in line and f"call={call_id}" in line for line in pod.logs().splitlines())]
    assert len(owners) == 1, f"call {call_id} is held by {[p.name for p in owners]}"
    return owners[0]


def metric_of(pod, name):
    """A metric's value on a pod's metrics port (the one its Prometheus annotations name)."""
    port = pod.workload["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"]
    text = urllib.request.urlopen(f"http://{pod.address}:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{"))


def packets(driver):
    return driver.execute_script("return window.parley.stats.packetsReceived || 0")


def test_the_manifests_run_a_call_through_the_relay_service_and_a_transceiver_drains(cluster):
    relays, transceivers = cluster.pods_of("parley-relay"), cluster.pods_of("parley-transceiver")
    assert len(relays) == 2 and len(transceivers) == 2, [p.name for p in cluster.pods]
    # The processes are the manifests' own: the downward API and the ConfigMap reached the flags.
    for pod in transceivers:
        assert f"--worker-host={pod.address}" in pod.argv and f"--relay-network={cluster.pod_network}" in pod.argv, pod.argv
        assert f"--relay=default={cluster.public_host}:{cluster.public_port}" in pod.argv, pod.argv
    for pod in relays:
        assert "--workers=2" in pod.argv and f"--worker-network={cluster.pod_network}" in pod.argv, pod.argv
        # The route store is the StatefulSet's Redis, by its Service's name, with the Secret's password.
        deadline = time.time() + 10
        while metric_of(pod, "parley_relay_store_connected") != 1:
            assert time.time() < deadline, f"{pod.name}: the route store is not connected\n" + pod.logs()[-2000:]
            time.sleep(0.2)

    browser = Browser(cluster)
    try:
        first, state = browser.call(cluster.ingress, cluster, "the first call connected", audio=True)
        # The answer advertises the load balancer (UDP, and ICE-TCP on 443), and media go there.
        answer = state["answer"]
        assert f"{cluster.public_host} {cluster.public_port} typ host" in answer, answer
        assert f"{cluster.public_host} 443 typ host tcptype passive" in answer, answer
        assert first.execute_script("return window.parley.stats.remote") == f"{cluster.public_host}:{cluster.public_port}/udp"
        call_id = state["callId"]
        owner = owner_of(cluster, call_id)
        other = next(pod for pod in transceivers if pod is not owner)
        # The transceiver sees the client's own address (no SNAT on the way), through a relay pod.
        import json
        described = json.loads(api(cluster, "GET", f"/v1/realtime/calls/{call_id}", pod=owner)[1])
        assert described["client"].startswith(f"{CLIENT}:") and any(
            f" via {relay.address}:" in described["client"] for relay in relays), described
        # Any pod answers for the call (the Service spreads requests; the other forwards to the owner).
        status, text = api(cluster, "GET", f"/v1/realtime/calls/{call_id}", pod=other)
        assert status == 200 and json.loads(text)["id"] == call_id, text
        assert metric_of(other, 'parley_signaling_forwarded_total{outcome="answered"}') == 1
        status, text = api(cluster, "GET", f"/v1/realtime/calls/{call_id}")
        assert status == 200 and json.loads(text)["id"] == call_id, text

        # Kubernetes deletes the owner's pod (a rollout, a scale-down, a node drain).
        deleting = threading.Thread(target=cluster.delete, args=(owner,))
        deleting.start()
        time.sleep(0.5)
        # Out of the endpoints at once: a new call goes to the other pod, during the preStop hook...
        second, state = browser.call(cluster.ingress, cluster, "a second call during the drain")
        assert owner_of(cluster, state["callId"]) is other
        deleting.join()
        assert owner.prestop_seconds >= 4.5, owner.prestop_seconds
        # ...and after SIGTERM the owner drains: not ready, its call goes on.
        before = packets(first)
        time.sleep(6)
        assert owner.process.poll() is None, "the draining pod exited with a call live:\n" + owner.logs()[-2000:]
        assert not owner.probe(), "a draining pod must fail its readiness probe"
        assert packets(first) > before + 200, "the draining pod's call stopped hearing audio"
        assert first.execute_script("return window.parley.state") == "connected"
        third, state = browser.call(cluster.ingress, cluster, "a third call after SIGTERM")
        assert owner_of(cluster, state["callId"]) is other
        # The first call hangs up (DELETE through the ingress, which reaches the other pod: it
        # forwards to the draining owner); the owner exits by itself, well inside its grace period.
        first.execute_script("window.hangup()")
        wait_for(first, lambda s: s.get("hangup") == 204, 10, "the hangup answered")
        hung_up = time.monotonic()
        owner.process.wait(timeout=10)
        print(f"drained pod exited {time.monotonic() - hung_up:.1f} s after its last call hung up "
              f"({time.monotonic() - owner.terminated_at:.1f} s after SIGTERM; grace {owner.grace} s)")
        assert owner.process.returncode == 0, owner.logs()[-2000:]
        assert "drain" in owner.logs()
        # The other pod's calls never noticed.
        for driver in (second, third):
            before = packets(driver)
            time.sleep(1)
            assert driver.execute_script("return window.parley.state") == "connected" and packets(driver) > before + 20
    finally:
        browser.close()


def test_a_client_whose_network_blocks_udp_calls_over_the_services_tcp_443(cluster):
    """ICE-TCP as deployed: the answer's passive candidate on the load balancer's 443, the Service
    pointing it at the relay pods' 8443, the relay's TCP listener, the tunnel, the transceiver."""
    run("ip", "netns", "exec", cluster.client_ns, "nft", "-f", "-", input=f"""
        table ip no_udp {{
          chain output {{ type filter hook output priority 0; ip daddr {cluster.public_host} meta l4proto udp drop; }}
        }}""")
    browser = Browser(cluster)
    try:
        driver, state = browser.call(cluster.ingress, cluster, "connected over TCP", seconds=30, audio=True)
        assert driver.execute_script("return window.parley.stats.remote") == f"{cluster.public_host}:443/tcp"
        import json
        described = json.loads(api(cluster, "GET", f"/v1/realtime/calls/{state['callId']}")[1])
        assert described["transport"] == "tcp" and described["client"].startswith(f"{CLIENT}:"), described
    finally:
        browser.close()


@pytest.fixture
def fleet(tmp_path):
    """The two region overlays as two clusters on the node. Each region's tunnel load balancer has
    the address the other region's `peer-tunnel` names; each cluster's pods reach the other's
    through an egress address inside the network the other's `peer-network` names (SNAT, as nodes or
    a NAT gateway do), so the relays believe forwards by network, not by pod address."""
    require(os.geteuid() == 0, "pods need network namespaces and mounts (scripts/interop.sh runs as root)")
    internet = Internet()
    a = Cluster(tmp_path, internet, "region-a", "a", "10.96.0.0/16", 8000)
    b = Cluster(tmp_path, internet, "region-b", "b", "10.97.0.0/16", 8001, region_header="a")
    for cluster, other in ((a, b), (b, a)):
        cluster.load_balancers["parley-relay-tunnel"] = other.objects.config_value("parley-cluster", "peer-tunnel").rsplit(":", 1)[0]
        cluster.egress = str(ipaddress.ip_network(other.objects.config_value("parley-cluster", "peer-network")).network_address + 1)
        cluster.egress_to = other.pod_network
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        for cluster in (a, b):
            cluster.stop()
        internet.stop()
        for cluster in (a, b):
            print_pods(cluster)


def test_the_region_overlays_carry_a_call_from_one_regions_relays_into_the_other_cluster(fleet):
    """A client near region A calls cluster 2 (region B's signaling): the answer lists region A's
    relays first (the edge said region a), Chromium enters there, relay A forwards the flow to
    region B's tunnel load balancer by the token's cluster id, and region B's relays believe it by
    its source network and route it to cluster 2's transceiver."""
    a, b = fleet
    for pod in a.pods_of("parley-relay"):
        assert "--cluster-relay=2=10.20.0.40:4000" in pod.argv and "--peer-network=10.20.0.0/16" in pod.argv, pod.argv
    for pod in b.pods_of("parley-transceiver"):
        assert "--cluster-id=2" in pod.argv and "--relay=a=203.0.113.10:3478" in pod.argv, pod.argv
    browser = Browser(a)
    try:
        driver, state = browser.call(b.ingress, b, "connected through region A", audio=True)
        udp = re.findall(r"^a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ host", state["answer"], re.MULTILINE)
        assert udp[:2] == [(a.public_host, "3478"), (b.public_host, "3478")], udp
        assert driver.execute_script("return window.parley.stats.remote") == f"{a.public_host}:3478/udp"
        owner = owner_of(b, state["callId"])
        import json
        described = json.loads(api(b, "GET", f"/v1/realtime/calls/{state['callId']}", pod=owner)[1])
        assert described["client"].startswith(f"{CLIENT}:") and " via 10.245." in described["client"], described
        time.sleep(1.2)  # relays publish their counters once a second
        forwarded = sum(metric_of(pod, 'parley_relay_packets_total{direction="to_transceiver"}') for pod in a.pods_of("parley-relay"))
        assert forwarded >= 100, "relay A did not forward the call's packets to region B"
        assert sum(metric_of(pod, 'parley_relay_drops_total{reason="bad_token"}') for pod in a.pods_of("parley-relay")) == 0
        assert sum(metric_of(pod, 'parley_relay_drops_total{reason="untrusted_peer"}') for pod in b.pods_of("parley-relay")) == 0
        echoed = driver.execute_async_script("""
            const done = arguments[0];
            window.channel.onmessage = (event) => done(event.data.length);
            window.channel.send(JSON.stringify({type: "x", pad: "a".repeat(30000)}));""")
        assert echoed > 30000, echoed
    finally:
        browser.close()
