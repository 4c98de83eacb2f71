// The meeting simulators' shared logic: one page per platform (google_meet.html, teams.html,
// zoom.html) holds that platform's DOM as <template>s, one per stage, and this script runs the
// meeting: which stage shows, the pre-join controls, tiles, remote audio and speaking indicators.
//
// Stages are cloned from templates into <main id="stage"> only while current, so the text of
// other stages is nowhere in the document: a bot probing for "You've been removed" can't find
// it in a hidden element by mistake. Elements this script drives carry data-sim="..." names,
// so the platforms' own selectors stay exactly as the bot's data files expect.
//
// A platform page calls Sim.start(platform) with hooks:
//   setToggle(el, device, on)   show a mic/camera toggle as on or off (aria-label, aria-checked...)
//   nextUi(root)                turn the pre-join screen into the "next" redesign (ui_version)
//   prejoin(root, config)       optional: platform touches on the pre-join screen
//   interceptJoin(root)         optional: true when a click on Join opens a dialog instead
//   fillTile(tile, person)      put a participant's name (and id) into a cloned tile
//   setSpeaking(tile, level)    show the speaking indicator; level 0 means silent
//   joinAudioByClick            true: no remote audio until the bot joins computer audio (Zoom)
//   nameKeyEvent                the event that enables Join once a name is typed ("input")
//   refusesAutomation           true: a browser with navigator.webdriver set is refused (Meet)
//   autoHiding                  a selector: the call's controls there hide while the pointer rests
// config.variant is the scenario's UI variant of the platform (meetings.VARIANTS): where the
// peers' observations of the real page differ, the pages offer each, and the bot must pass all.
//
// Every control ignores untrusted (script-dispatched) clicks: Meet does (Vexa's googlemeet
// join.ts, "Google Meet now blocks browser-synthetic input"), and a bot that clicks like a
// person passes on every platform.

"use strict";

const Sim = (() => {
  const config = JSON.parse(document.getElementById("sim-config").textContent);
  const api = `/_sim/meetings/${config.platform}/${encodeURIComponent(config.key)}`;
  const POLL_MS = 250;
  // Speaking: RMS over ~40 ms windows above -40 dBFS, held 250 ms so the indicator doesn't
  // flicker between words (real clients smooth their audio levels the same way).
  const SPEAKING_RMS = 0.01;
  const SPEAKING_HOLD_MS = 250;
  const LEVEL_EVERY_MS = 50;
  const ICE_TIMEOUT_MS = 4000;
  const NO_CANDIDATES_MS = 1000;
  const CONTROLS_HIDE_MS = 3000;

  let platform = null;
  let stage = null; // the stage on screen
  let localStage = "prejoin"; // launcher or prejoin: what the page shows while the server says prejoin
  let state = null;
  let sequence = 0; // requests are numbered; a response older than the last one applied is stale
  let applied = 0;
  const devices = { microphone: true, camera: true }; // on by default, as on every platform
  let preview = null; // the pre-join camera/microphone stream
  const tiles = new Map(); // participant id -> tile element
  const voices = new Map(); // participant id -> {stop, ...} once their audio is set up
  let farEndContext = null; // the other participants' microphones (see "remote audio")
  let meterContext = null; // the speaking indicators' analysers
  const decoded = new Map(); // voice URL -> Promise<AudioBuffer>
  let audioBox = null; // where the remote <audio> elements live (outside the stage)
  let opened = null; // the "open" report's promise
  let refused = false; // the platform turned this browser away before its pre-join screen

  // --- talking to the server -------------------------------------------------------------

  async function request(method, path, body) {
    const number = ++sequence;
    const response = await fetch(api + path, {
      method,
      headers: body ? { "Content-Type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
      cache: "no-store",
    });
    const data = await response.json();
    if (response.ok && number > applied) {
      applied = number;
      apply(data);
    }
    return { ok: response.ok, status: response.status, data };
  }

  const report = (action, body) => request("POST", `/bot/${action}`, body || {});

  async function poll() {
    try {
      const answer = await request("GET", "");
      if (answer.status === 404) return show("notfound");
    } catch (error) {
      console.warn("simulator: poll failed", error);
    }
    setTimeout(poll, POLL_MS);
  }

  // --- stages ------------------------------------------------------------------------------

  function stageFor(status) {
    if (refused) return "refused";
    if (status === "prejoin") return localStage;
    if (status === "waiting") return "lobby";
    if (status === "in_meeting") return "meeting";
    return status; // denied, removed, ended, left
  }

  function apply(next) {
    state = next;
    const wanted = stageFor(state.status);
    if (wanted !== stage) show(wanted);
    if (stage === "meeting") {
      syncTiles();
      syncAudio();
    }
  }

  function show(name) {
    if (name !== "meeting") stopAllAudio();
    if (name !== "prejoin") stopPreview();
    stage = name;
    const root = document.getElementById("stage");
    root.replaceChildren(clone(`tpl-${name}`));
    for (const el of root.querySelectorAll('[data-sim="key"]')) el.textContent = config.key;
    tiles.clear();
    const setup = { launcher: setupLauncher, prejoin: setupPrejoin, lobby: setupLobby, meeting: setupMeeting }[name];
    if (setup) setup(root);
  }

  function clone(id) {
    const template = document.getElementById(id);
    if (!template) throw new Error(`simulator page has no <template id="${id}">`);
    return template.content.cloneNode(true);
  }

  const named = (root, name) => root.querySelector(`[data-sim="${name}"]`);
  const on = (root, name, handler) => {
    for (const el of root.querySelectorAll(`[data-sim="${name}"]`)) {
      el.addEventListener("click", (event) => { if (event.isTrusted) handler(event); });
    }
  };

  // Prompts (cookie banners, sign-in offers, "Got it" tips) go away when clicked, as real ones do.
  function wirePrompts(root) {
    on(root, "dismiss", (event) => {
      const prompt = event.currentTarget.closest("[data-sim-prompt]");
      if (prompt) prompt.remove();
      report("dismiss", { what: prompt ? prompt.dataset.simPrompt : "" });
    });
  }

  function setupLauncher(root) {
    on(root, "continue", () => {
      report("dismiss", { what: "launcher" });
      localStage = "prejoin";
      show("prejoin");
    });
  }

  function setupPrejoin(root) {
    wirePrompts(root);
    if (platform.prejoin) platform.prejoin(root, config);
    if (!config.passcode_required) {
      const row = root.querySelector("[data-sim-passcode-row]");
      if (row) row.remove();
    }
    if (config.ui_version === "next") platform.nextUi(root);
    for (const device of ["microphone", "camera"]) {
      const toggle = named(root, device);
      if (!toggle) continue;
      platform.setToggle(toggle, device, devices[device]);
      const flip = () => {
        devices[device] = !devices[device];
        platform.setToggle(toggle, device, devices[device]);
        applyDevicesToPreview();
        report("toggle", { device, on: devices[device] });
      };
      toggle.addEventListener("click", (event) => {
        if (!event.isTrusted) return event.preventDefault();
        flip();
      });
      // A native button or checkbox turns the keyboard into a click itself; a scripted control
      // (Meet's div role="button", Teams' div role="switch") answers Space and Enter in its own
      // code, as the WAI-ARIA button and switch patterns ask of it.
      const native = toggle instanceof HTMLButtonElement || toggle instanceof HTMLInputElement;
      toggle.addEventListener("keydown", (event) => {
        if (!event.isTrusted || native || ![" ", "Enter"].includes(event.key)) return;
        event.preventDefault();
        flip();
      });
    }
    // Like the real pages, joining needs a name first.
    const name = named(root, "name");
    const join = named(root, "join");
    const refresh = () => { join.disabled = !name.value.trim(); };
    name.addEventListener(platform.nameKeyEvent || "input", refresh);
    refresh();
    on(root, "join", async () => {
      if (platform.interceptJoin && platform.interceptJoin(root)) return report("join_intercepted");
      const passcode = named(root, "passcode");
      join.disabled = true;
      await opened; // the page's "open" (which resets the bot to pre-join) must land first
      const answer = await report("join", {
        name: name.value.trim(),
        microphone: devices.microphone,
        camera: devices.camera,
        passcode: passcode ? passcode.value : null,
      });
      if (!answer.ok) {
        const error = named(root, "error");
        if (error) error.hidden = false;
        refresh();
      }
    });
    startPreview(root);
  }

  // Meet shows Leave call (and the mic and camera) in the lobby too.
  function setupLobby(root) {
    on(root, "leave", () => report("leave"));
  }

  function setupMeeting(root) {
    // What shows up once admitted (Meet's tip, Zoom's "Join Audio" dialog).
    if (document.getElementById("tpl-after-admission")) root.append(clone("tpl-after-admission"));
    if (platform.autoHiding) autoHide(root.querySelector(platform.autoHiding));
    wirePrompts(root);
    on(root, "join-audio", async (event) => {
      event.currentTarget.closest("[data-sim-prompt]")?.remove();
      await report("join_audio");
    });
    on(root, "leave", () => {
      if (!document.getElementById("tpl-leave-confirm")) return report("leave");
      // Zoom asks before leaving: the confirmation appears next to the leave button.
      if (!named(root, "leave-confirm")) {
        root.append(clone("tpl-leave-confirm"));
        on(root, "leave-confirm", () => report("leave"));
      }
      report("leave_clicked");
    });
  }

  // Meet's and Zoom's call controls hide a few seconds after the pointer last moved, and come
  // back when it moves (Vexa's googlemeet admission.ts moves the mouse "to re-show the
  // auto-hidden toolbar"; joinly's zoom.py clicks "to reveal the auto-hidden toolbar").
  function autoHide(controls) {
    let timer = null;
    const reveal = () => {
      controls.style.visibility = "visible";
      clearTimeout(timer);
      timer = setTimeout(() => { controls.style.visibility = "hidden"; }, CONTROLS_HIDE_MS);
    };
    document.addEventListener("mousemove", reveal);
    reveal();
  }

  // --- pre-join preview ----------------------------------------------------------------------

  // The pre-join screen asks for the camera and microphone, as the platforms do (Chromium's fake
  // devices answer). Having media permission is also what makes Chromium offer real host
  // addresses, not mDNS names, as ICE candidates for the loopback audio later.
  async function startPreview(root) {
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
      if (stage !== "prejoin") return stream.getTracks().forEach((t) => t.stop());
      preview = stream;
      const video = named(root, "preview");
      // Only the camera goes to the self-view: a bot must not take its own microphone for a
      // remote participant.
      if (video) video.srcObject = new MediaStream(stream.getVideoTracks());
      applyDevicesToPreview();
    } catch (error) {
      console.warn("simulator: no camera/microphone for the preview", error);
    }
  }

  function applyDevicesToPreview() {
    if (!preview) return;
    preview.getAudioTracks().forEach((t) => { t.enabled = devices.microphone; });
    preview.getVideoTracks().forEach((t) => { t.enabled = devices.camera; });
  }

  function stopPreview() {
    if (preview) preview.getTracks().forEach((t) => t.stop());
    preview = null;
  }

  // --- tiles -------------------------------------------------------------------------------

  function syncTiles() {
    const box = document.querySelector('#stage [data-sim="tiles"]');
    // The bot sees itself among the tiles, under the name it typed, as on the real platforms.
    const people = [{ id: "self", name: state.bot.name || "", voice: null }, ...state.participants];
    const present = new Set(people.map((p) => p.id));
    for (const [id, tile] of tiles) {
      if (!present.has(id)) {
        tile.remove();
        tiles.delete(id);
      }
    }
    for (const person of people) {
      if (tiles.has(person.id)) continue;
      const tile = clone("tpl-tile").firstElementChild;
      platform.fillTile(tile, person);
      platform.setSpeaking(tile, 0);
      box.append(tile);
      tiles.set(person.id, tile);
    }
  }

  // --- remote audio ------------------------------------------------------------------------
  //
  // Each voiced participant's WAV is their microphone on the far end. With audio_transport
  // "webrtc" it is sent through a pair of RTCPeerConnections inside the page and the received
  // stream is attached to an <audio autoplay> element's srcObject, which is how the real
  // platforms play remote participants; with "element" (or when the loopback can't connect)
  // the remote audio is an <audio src=... autoplay> element. Either way those <audio> elements
  // are the page's only audio output: nothing goes to an AudioContext's destination.
  //
  // The far end is Web Audio (an AudioBufferSourceNode into a MediaStreamAudioDestinationNode),
  // not a captured media element: a bot hooking media elements must not find the senders, and
  // in Chromium an element's captureStream() audio dies when another capture of the same
  // element is closed, so the page keeps its hands off every element the bot may capture.

  function audioHeard() {
    return state.status === "in_meeting" && (!platform.joinAudioByClick || state.bot.audio_joined);
  }

  function syncAudio() {
    const present = new Map(state.participants.map((p) => [p.id, p]));
    for (const [id, voice] of voices) {
      if (!present.has(id)) {
        voice.stop();
        voices.delete(id);
      }
    }
    if (!audioHeard()) return;
    const starting = state.participants.filter((p) => p.voice && !voices.has(p.id));
    if (!starting.length) return;
    const pending = starting.map((person) => {
      const voice = { stopped: false, stop() { this.stopped = true; } };
      voices.set(person.id, voice);
      return prepareVoice(person, voice).catch((error) => console.error("simulator: no audio for", person.name, error));
    });
    // Everyone present starts speaking at the same moment, so the voices add up to the
    // recorded meeting; setting up each connection takes a different time.
    Promise.all(pending).then((ready) => {
      const at = farEnd().currentTime + 0.05;
      ready.forEach((start) => start && start(at));
    });
  }

  async function prepareVoice(person, voice) {
    const url = `/_sim/voices/${encodeURIComponent(person.voice)}.wav`;
    const buffer = await decodeVoice(url);
    let remote = null;
    let fallback = null;
    if (state.scenario.audio_transport === "webrtc") {
      try {
        remote = await viaWebRTC(buffer);
      } catch (error) {
        fallback = String(error && error.message ? error.message : error);
        console.warn(`simulator: WebRTC loopback failed (${fallback}); playing ${person.name} from an <audio> element`);
      }
    }
    if (!remote && !voice.stopped) remote = await viaElement(url, buffer);
    if (voice.stopped) return remote && remote.stop();
    let unwatch = () => {};
    voice.stop = () => {
      voice.stopped = true;
      remote.stop();
      unwatch();
    };
    return (at) => {
      if (voice.stopped) return; // they left, or the bot did, while the others were being set up
      remote.start(at);
      report("audio", { participant: person.name, transport: remote.transport, fallback });
      unwatch = watchLevel(remote.rms, (level) => {
        const tile = tiles.get(person.id);
        if (tile) platform.setSpeaking(tile, level);
      });
    };
  }

  // The other participants' side: one AudioContext for all their microphones, so that their
  // voices can be started on the same sample.
  function farEnd() {
    if (!farEndContext) farEndContext = new AudioContext();
    farEndContext.resume();
    return farEndContext;
  }

  function decodeVoice(url) {
    if (!decoded.has(url)) {
      decoded.set(url, fetch(url).then((r) => r.arrayBuffer()).then((data) => farEnd().decodeAudioData(data)));
    }
    return decoded.get(url);
  }

  function remoteAudioElement() {
    if (!audioBox) {
      audioBox = document.createElement("div");
      audioBox.id = "remote-audio";
      document.body.append(audioBox);
    }
    const element = document.createElement("audio");
    element.autoplay = true;
    audioBox.append(element);
    return element;
  }

  // One connection pair per participant, so someone joining late renegotiates nobody else's.
  async function viaWebRTC(buffer) {
    const microphone = farEnd().createMediaStreamDestination();
    const sent = microphone.stream;
    const sender = new RTCPeerConnection();
    const receiver = new RTCPeerConnection();
    let source = null;
    const close = () => {
      if (source) source.stop();
      sender.close();
      receiver.close();
    };
    try {
      let candidates = 0;
      sender.onicecandidate = (e) => { if (e.candidate) { candidates++; receiver.addIceCandidate(e.candidate); } };
      receiver.onicecandidate = (e) => { if (e.candidate) sender.addIceCandidate(e.candidate); };
      const arrived = new Promise((resolve) => {
        receiver.ontrack = (e) => resolve(e.streams[0] || new MediaStream([e.track]));
      });
      sender.addTrack(sent.getAudioTracks()[0], sent);
      const offer = await sender.createOffer();
      await sender.setLocalDescription(offer);
      await receiver.setRemoteDescription(offer);
      const answer = await receiver.createAnswer();
      await receiver.setLocalDescription(answer);
      await sender.setRemoteDescription(answer);
      await connected(sender, () => candidates);
      const stream = await arrived;
      const element = remoteAudioElement();
      element.srcObject = stream;
      // The speaking indicator listens to what arrived, as a real client meters remote audio.
      const rms = meter(stream);
      return {
        transport: "webrtc",
        rms,
        start(at) {
          source = farEnd().createBufferSource();
          source.buffer = buffer;
          source.connect(microphone);
          source.start(at);
        },
        stop() {
          close();
          rms.stop();
          element.srcObject = null;
          element.remove();
        },
      };
    } catch (error) {
      close();
      throw error;
    }
  }

  // ICE between two connections of one page. Chromium gathers no candidates on a machine whose
  // only interface is loopback (and never says gathering is complete): host candidates come
  // within milliseconds when there are any, so none after NO_CANDIDATES_MS means fall back.
  function connected(pc, candidates) {
    return new Promise((resolve, reject) => {
      const fail = (why) => { clearTimeout(timer); clearTimeout(early); reject(new Error(why)); };
      const timer = setTimeout(() => fail(candidates() ? "ICE did not connect" : "no ICE candidates"), ICE_TIMEOUT_MS);
      const early = setTimeout(() => { if (!candidates()) fail("no ICE candidates"); }, NO_CANDIDATES_MS);
      const check = () => {
        if (pc.iceConnectionState === "connected" || pc.iceConnectionState === "completed") {
          clearTimeout(timer);
          clearTimeout(early);
          resolve();
        } else if (pc.iceConnectionState === "failed") {
          fail("ICE failed");
        } else if (pc.iceGatheringState === "complete" && candidates() === 0) {
          fail("no ICE candidates"); // gathering may well have finished before we got here
        }
      };
      pc.oniceconnectionstatechange = check;
      pc.onicegatheringstatechange = check;
      check();
    });
  }

  // An AnalyserNode on a received stream: RMS of the last ~40 ms. It goes nowhere.
  function meter(stream) {
    if (!meterContext) meterContext = new AudioContext();
    meterContext.resume();
    const input = meterContext.createMediaStreamSource(stream);
    const analyser = meterContext.createAnalyser();
    analyser.fftSize = 2048;
    input.connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const rms = () => {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const s of samples) sum += s * s;
      return Math.sqrt(sum / samples.length);
    };
    rms.stop = () => input.disconnect();
    return rms;
  }

  // "element" transport (and the fallback): the remote audio is an <audio src autoplay> element.
  // Its level is read from the decoded voice at the element's playback position rather than
  // from a capture of the element (see above: captures of one element interfere).
  // It is ready once it can play through, so that the voices' play() calls start them together.
  async function viaElement(url, buffer) {
    const element = remoteAudioElement();
    element.autoplay = false; // started with the others
    element.preload = "auto";
    const ready = new Promise((resolve) => {
      element.addEventListener("canplaythrough", resolve, { once: true });
      element.addEventListener("error", resolve, { once: true }); // play() will say what is wrong
    });
    element.src = url;
    await ready;
    const channel = buffer.getChannelData(0);
    const span = Math.round(buffer.sampleRate * 0.04); // ~40 ms, like the analyser's window
    return {
      transport: "element",
      rms() {
        if (element.paused || element.ended) return 0;
        const end = Math.min(channel.length, Math.round(element.currentTime * buffer.sampleRate));
        let sum = 0;
        for (let i = Math.max(0, end - span); i < end; i++) sum += channel[i] * channel[i];
        return Math.sqrt(sum / span);
      },
      start() {
        element.autoplay = true;
        element.play().catch((error) => console.warn("simulator: remote audio didn't play", error));
      },
      stop() {
        element.pause();
        element.removeAttribute("src");
        element.remove();
      },
    };
  }

  // The speaking indicator: above the threshold is speaking, held a moment after it drops.
  function watchLevel(rms, onLevel) {
    let loudAt = -Infinity;
    let level = 0;
    const timer = setInterval(() => {
      const value = rms();
      const now = performance.now();
      if (value > SPEAKING_RMS) {
        loudAt = now;
        level = value > 0.1 ? 3 : value > 0.03 ? 2 : 1;
      } else if (now - loudAt > SPEAKING_HOLD_MS) {
        level = 0;
      }
      onLevel(level);
    }, LEVEL_EVERY_MS);
    return () => clearInterval(timer);
  }

  function stopAllAudio() {
    for (const voice of voices.values()) voice.stop();
    voices.clear();
  }

  // --- start -------------------------------------------------------------------------------

  async function start(hooks) {
    platform = hooks;
    if (!config.exists) return show("notfound");
    if (platform.refusesAutomation && navigator.webdriver) {
      // The refusal is the server's answer to the page's report, so it shows once that has landed.
      refused = true;
      try {
        await report("open", { webdriver: true });
      } finally {
        show("refused");
      }
      return;
    }
    localStage = document.getElementById("tpl-launcher") ? "launcher" : "prejoin";
    show(localStage); // at once, so the first screen's prompts are there when the page loads
    opened = report("open", { webdriver: navigator.webdriver });
    await opened;
    poll();
  }

  return { start, config };
})();
