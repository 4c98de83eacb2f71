// Injected into every meeting page before the platform's own scripts run (add_init_script),
// after probes.js (window.__vexaProbe), which reads the page's states and tiles.
//
// It does three things, all read by the bot through `window.__vexa.poll()`:
//  1. audio: every remote audio track the page receives (RTCPeerConnection tracks, and media
//     elements playing a stream or a file) is mixed in one WebAudio graph at 16 kHz mono and
//     handed out as base64 signed 16-bit PCM;
//  2. speakers: the platform's participant tiles are read ten times a second; a change in who
//     speaks is stamped with the audio position it happened at, so speakers and audio share a clock;
//  3. state: the platform's state probes (lobby, in meeting, denied, removed, ended).
// What to look for comes from the platform's data file, passed to `watch()` by the bot.
(() => {
  if (window.__vexa) return;
  const SAMPLE_RATE = 16000;
  const BATCH_FRAMES = 1600; // the worklet posts 100 ms at a time
  const WORKLET = `
    class VexaCapture extends AudioWorkletProcessor {
      constructor() { super(); this.batch = new Float32Array(${BATCH_FRAMES}); this.filled = 0; this.first = 0; }
      process(inputs) {
        const channels = inputs[0];
        const frames = channels.length ? channels[0].length : 128;
        for (let i = 0; i < frames; i++) {
          if (this.filled === 0) this.first = currentFrame + i;
          let sum = 0;
          for (const channel of channels) sum += channel[i];
          this.batch[this.filled++] = channels.length ? sum / channels.length : 0;
          if (this.filled === this.batch.length) {
            this.port.postMessage({ first: this.first, samples: this.batch });
            this.batch = new Float32Array(${BATCH_FRAMES});
            this.filled = 0;
          }
        }
        return true;
      }
    }
    registerProcessor("vexa-capture", VexaCapture);`;

  let context = null;
  let mixer = null;
  let startFrame = null; // audio position 0, in context frames; null until start()
  let pcm = []; // base64 PCM batches not yet polled
  const tracks = new Map(); // track id -> its source node (each remote track is mixed once)
  let spec = null;
  let present = new Map(); // participant name -> speaking
  let speakerChanges = []; // {name, speaking, at} not yet polled; `at` in seconds of audio
  let everSeen = new Set();

  async function ensureContext() {
    if (context) return;
    context = new AudioContext({ sampleRate: SAMPLE_RATE });
    mixer = context.createGain();
    const url = URL.createObjectURL(new Blob([WORKLET], { type: "application/javascript" }));
    await context.audioWorklet.addModule(url);
    const capture = new AudioWorkletNode(context, "vexa-capture", { channelCount: 1, channelCountMode: "explicit" });
    capture.port.onmessage = (message) => keep(message.data);
    mixer.connect(capture);
    // A node only runs while connected to the destination; a silent gain keeps it from being heard.
    const mute = context.createGain();
    mute.gain.value = 0;
    capture.connect(mute).connect(context.destination);
    for (const [id, entry] of tracks) if (!entry.node) connect(id, entry.track);
    if (context.state !== "running") context.resume();
  }

  function keep({ first, samples }) {
    if (startFrame === null) return;
    let from = Math.max(0, startFrame - first);
    if (from >= samples.length) return;
    const ints = new Int16Array(samples.length - from);
    for (let i = 0; i < ints.length; i++) {
      const s = Math.max(-1, Math.min(1, samples[from + i]));
      ints[i] = s < 0 ? s * 0x8000 : s * 0x7fff;
    }
    const bytes = new Uint8Array(ints.buffer);
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    pcm.push(btoa(binary));
  }

  function connect(id, track) {
    const node = context.createMediaStreamSource(new MediaStream([track]));
    node.connect(mixer);
    tracks.set(id, { track, node });
    track.addEventListener("ended", () => {
      node.disconnect();
      tracks.delete(id);
    });
  }

  function addTrack(track) {
    if (track.kind !== "audio" || tracks.has(track.id) || track.readyState === "ended") return;
    tracks.set(track.id, { track, node: null });
    if (context) connect(track.id, track);
  }

  const streams = new WeakSet(); // streams whose later tracks are already listened for
  function addStream(stream) {
    for (const track of stream.getAudioTracks()) addTrack(track);
    if (streams.has(stream)) return;
    streams.add(stream);
    stream.addEventListener("addtrack", (event) => addTrack(event.track));
  }

  // Remote WebRTC audio, however the page attaches it later.
  const NativePeerConnection = window.RTCPeerConnection;
  if (NativePeerConnection) {
    window.RTCPeerConnection = function (...args) {
      const connection = new NativePeerConnection(...args);
      connection.addEventListener("track", (event) => addTrack(event.track));
      return connection;
    };
    window.RTCPeerConnection.prototype = NativePeerConnection.prototype;
    Object.setPrototypeOf(window.RTCPeerConnection, NativePeerConnection);
  }

  // Media elements in the document: a stream attached as srcObject, or a file/URL playing
  // (captured as a stream). Elements outside the document are the page's own sources, e.g. a
  // file it sends over WebRTC, whose sound arrives (again) as a remote track.
  const captured = new WeakSet();
  function scanMediaElements() {
    for (const element of document.querySelectorAll("audio, video")) {
      if (element.srcObject instanceof MediaStream) {
        addStream(element.srcObject);
      } else if (!captured.has(element) && (element.currentSrc || element.src) && !element.paused && element.captureStream) {
        captured.add(element);
        addStream(element.captureStream());
      }
    }
  }
  document.addEventListener("play", scanMediaElements, true);

  // -- the platform's page, read through the data file's probes (probes.js) ------------------
  const probes = window.__vexaProbe;

  function anyOnPage(list) {
    return (list || []).some((probe) => probes.onPage(probe, document));
  }

  function audioPosition() {
    return context && startFrame !== null ? Math.max(0, context.currentTime * SAMPLE_RATE - startFrame) / SAMPLE_RATE : 0;
  }

  // A tile's participant: the text of what a name probe finds in it, or an attribute of the tile.
  function nameOf(tile, nameProbes) {
    for (const probe of nameProbes) {
      const name = probe.startsWith("attr:")
        ? tile.getAttribute(probe.slice(5))
        : probes.queryAll(tile, probe).map((element) => element.textContent.trim()).find(Boolean);
      if (name && name.trim()) return name.trim();
    }
    return null;
  }

  function readParticipants() {
    const seen = new Map();
    const p = spec.participants;
    const tiles = new Set(p.tile.flatMap((probe) => probes.queryAll(document, probe)));
    for (const tile of tiles) {
      const name = nameOf(tile, p.name);
      if (!name) continue;
      const speaking = p.speaking.some((probe) => probes.queryAll(tile, probe).length > 0);
      seen.set(name, (seen.get(name) || false) || speaking);
    }
    const at = audioPosition();
    for (const [name, speaking] of seen) {
      if ((present.get(name) || false) !== speaking) speakerChanges.push({ name, speaking, at });
      everSeen.add(name);
    }
    for (const [name, speaking] of present) {
      if (!seen.has(name) && speaking) speakerChanges.push({ name, speaking: false, at });
    }
    present = seen;
  }

  window.__vexa = {
    // Watch the page with a platform's probes (the data file's [states] and [participants]);
    // each new document needs it once, so poll() starts it.
    watch(platformSpec) {
      if (spec) return;
      spec = platformSpec;
      setInterval(() => {
        scanMediaElements();
        if (document.body) readParticipants();
      }, 100);
    },
    // Audio position 0 is now: from here on remote audio is kept for the bot.
    async start() {
      await ensureContext();
      startFrame = Math.round(context.currentTime * SAMPLE_RATE);
      return context.state;
    },
    poll(platformSpec) {
      window.__vexa.watch(platformSpec);
      const state = {};
      for (const [name, list] of Object.entries(spec ? spec.states : {})) state[name] = anyOnPage(list);
      const result = {
        audio: pcm,
        speakers: speakerChanges,
        present: [...present.keys()],
        seen: [...everSeen],
        state,
        position: audioPosition(),
        tracks: tracks.size,
      };
      pcm = [];
      speakerChanges = [];
      return result;
    },
  };
})();
