// freebind search page: plain JavaScript, no build step, no network beyond this server.
// State lives in the URL (?q= | item= | upload=, m=, preset=, f=, k=): shareable, and the
// back button steps through earlier searches.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const state = {
    info: null, query: null, factors: {}, preset: null, modality: "", seq: 0, timer: null,
    previews: {},  // upload token → object URL of the file chosen on this page
  };
  const NAMES = { audio: "Audio", image: "Images", text: "Texts", video: "Video",
                  depth: "Depth", thermal: "Thermal", imu: "IMU", point: "Points" };
  const EXAMPLES = ["a dog barking", "rain falling on a window", "a photo of a red car",
                    "someone playing the piano", "birds singing in the morning",
                    "a cat sitting on a sofa"];

  function setStatus(text, kind) {
    const el = $("status");
    el.textContent = text;
    el.className = kind || "muted";
  }

  async function api(path, options) {
    const res = await fetch(path, options);
    if (res.status === 401) { window.location.assign("/login"); }  // the session ended
    let body = null;
    try { body = await res.json(); } catch (e) { body = { error: res.statusText }; }
    if (!res.ok) throw new Error(body.error || res.statusText);
    return body;
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function cap(s) { return s ? s[0].toUpperCase() + s.slice(1) : s; }

  function duration(s) {
    const m = Math.floor(s / 60), sec = Math.round(s - 60 * m);
    return `${m}:${String(sec).padStart(2, "0")}`;
  }

  // --- controls --------------------------------------------------------------------------
  function sliderWords(c) {
    const verb = c.kind === "c" ? "blend in" : "move toward";
    return `${cap(c.modality)}: ${verb} ${c.expert}`;
  }

  function sliderTip(c) {
    const kind = c.kind === "c" ? "combination" : "displacement";
    return `${c.bond}.${c.modality} · ${kind} bond · 0 = without ${c.expert}, ` +
      `1 = ${c.expert} alone`;
  }

  function buildControls(info) {
    $("target").textContent = `${info.expression} · ${info.items} items`;
    const preset = $("preset");
    const names = info.presets.length ? info.presets : ["default"];
    for (const p of [...names, "custom"]) {
      const o = el("option", "", p);
      o.value = p;
      preset.appendChild(o);
    }
    state.preset = info.preset && names.includes(info.preset) ? info.preset :
      (names.includes("default") ? "default" : names[0]);
    preset.value = state.preset;
    if (!info.bundle) { preset.disabled = true; $("controls").hidden = true; }
    const box = $("sliders");
    for (const c of info.controls) {
      const key = `${c.bond}.${c.modality}`;
      const id = `f-${c.bond}-${c.modality}`;
      const wrap = el("div", "slider");
      const lab = el("label", "", sliderWords(c));
      lab.htmlFor = id;
      lab.title = sliderTip(c);
      const input = el("input");
      Object.assign(input, { type: "range", id, min: "0", max: "1", step: "0.05" });
      input.dataset.key = key;
      input.title = sliderTip(c);
      const out = el("output");
      out.id = `${id}-v`;
      wrap.append(lab, input, out);
      box.appendChild(wrap);
      input.value = c.value;
      state.factors[key] = c.value;
      out.textContent = Number(c.value).toFixed(2);
      input.addEventListener("input", () => {
        state.factors[key] = Number(input.value);
        out.textContent = Number(input.value).toFixed(2);
        state.preset = "custom";
        $("preset").value = "custom";
        summarise();
        schedule();
      });
    }
    summarise();
    const tabs = $("tabs");
    const all = Object.values(info.modalities).reduce((a, b) => a + b, 0);
    for (const [m, n] of [["", all], ...Object.entries(info.modalities)]) {
      const b = el("button", "tab");
      b.type = "button";
      b.setAttribute("role", "tab");
      b.dataset.modality = m;
      b.append(el("span", "", m ? (NAMES[m] || cap(m)) : "All"), el("span", "count", String(n)));
      b.addEventListener("click", () => { state.modality = m; markTab(); search(true); });
      tabs.appendChild(b);
    }
    markTab();
    const ex = $("examples");
    for (const q of EXAMPLES) {
      const b = el("button", "example", q);
      b.type = "button";
      b.addEventListener("click", () => { $("q").value = q; submitText(); });
      ex.appendChild(b);
    }
    if (window.matchMedia("(max-width: 640px)").matches) $("controls").open = false;
  }

  function markTab() {
    for (const b of document.querySelectorAll("#tabs .tab")) {
      const on = b.dataset.modality === state.modality;
      b.classList.toggle("on", on);
      b.setAttribute("aria-selected", on ? "true" : "false");
    }
  }

  function summarise() {
    $("controls-summary").textContent = state.info && state.info.bundle ? `· ${state.preset}` : "";
  }

  function setSliders(values) {
    for (const input of document.querySelectorAll("#sliders input")) {
      const key = input.dataset.key;
      if (key in values) {
        input.value = values[key];
        state.factors[key] = Number(values[key]);
        input.parentElement.querySelector("output").textContent = Number(values[key]).toFixed(2);
      }
    }
  }

  function applyPreset(name) {
    state.preset = name;
    if (name !== "custom") setSliders((state.info.preset_values || {})[name] || {});
    summarise();
  }

  // --- the URL ---------------------------------------------------------------------------
  function toURL() {
    const p = new URLSearchParams();
    const q = state.query;
    if (q) {
      if (q.text) p.set("q", q.text);
      if (q.item !== undefined) p.set("item", q.item);
      if (q.upload) { p.set("upload", q.upload); p.set("name", q.name || ""); }
    }
    if (state.modality) p.set("m", state.modality);
    if (state.info.bundle) {
      p.set("preset", state.preset);
      if (state.preset === "custom") {
        p.set("f", Object.entries(state.factors).map(([k, v]) => `${k}:${v}`).join(","));
      }
    }
    if ($("k").value !== "20") p.set("k", $("k").value);
    const s = p.toString();
    return s ? `?${s}` : location.pathname;
  }

  function fromURL() {
    const p = new URLSearchParams(location.search);
    state.query = null;
    if (p.get("q")) state.query = { text: p.get("q") };
    else if (p.get("item") && /^[0-9]+$/.test(p.get("item"))) {
      state.query = { item: Number(p.get("item")), name: `item ${p.get("item")}` };
    } else if (p.get("upload")) state.query = { upload: p.get("upload"), name: p.get("name") || "upload" };
    const m = p.get("m") || "";
    state.modality = m && state.info.modalities[m] !== undefined ? m : "";
    const k = p.get("k");
    if (k && [...$("k").options].some((o) => o.value === k)) $("k").value = k;
    if (state.info.bundle) {
      const preset = p.get("preset");
      if (preset && [...$("preset").options].some((o) => o.value === preset)) {
        $("preset").value = preset;
        applyPreset(preset);
      }
      if (preset === "custom" && p.get("f")) {
        const values = {};
        for (const part of p.get("f").split(",")) {
          const [key, v] = part.split(":");
          if (key && v !== undefined && !isNaN(Number(v))) values[key] = Number(v);
        }
        setSliders(values);
      }
    }
    $("q").value = state.query && state.query.text ? state.query.text : "";
    markTab();
  }

  // --- the active query ------------------------------------------------------------------
  function showActive() {
    const q = state.query;
    const box = $("active");
    const prev = $("active-preview");
    prev.replaceChildren();
    if (!q || q.text) { box.hidden = true; return; }
    box.hidden = false;
    if (q.upload) {
      $("active-kind").textContent = "Searching with your file";
      $("active-name").textContent = q.name;
      const url = state.previews[q.upload];
      if (url && q.modality === "image") {
        const img = el("img", "preview"); img.src = url; img.alt = q.name; prev.appendChild(img);
      } else if (url && q.modality === "audio") {
        const au = el("audio", "preview"); au.controls = true; au.src = url; prev.appendChild(au);
      }
    } else {
      $("active-kind").textContent = "More like";
      $("active-name").textContent = q.name;
      if (q.thumb) {
        const img = el("img", "preview"); img.src = q.thumb; img.alt = q.name; prev.appendChild(img);
      }
    }
  }

  // --- results ---------------------------------------------------------------------------
  function card(h) {
    const div = el("div", `card ${h.modality}`);
    div.dataset.id = h.id;
    const head = el("div", "head");
    const left = el("span", "", `#${h.rank} `);
    left.appendChild(el("span", "tag", h.modality));
    head.append(left, el("span", "score", h.score.toFixed(4)));
    div.appendChild(head);
    let thumb = null;
    if (h.modality === "image" && h.media) {
      const img = el("img");
      img.src = h.media; img.alt = h.caption || h.name; img.loading = "lazy";
      div.appendChild(img);
      thumb = h.media;
    } else if (h.modality === "point" && h.thumb) {
      const img = el("img", "cloud");   // three views: front, side, above
      img.src = h.thumb; img.alt = `3D views of ${h.name}`; img.loading = "lazy";
      div.appendChild(img);
      thumb = h.thumb;
    } else if (h.modality === "audio" && h.media) {
      if (h.thumb) {
        const w = el("img", "wave");
        w.src = h.thumb; w.alt = `waveform of ${h.name}`; w.loading = "lazy";
        div.appendChild(w);
        thumb = h.thumb;
      }
      const row = el("div", "audio-row");
      const au = el("audio");
      au.controls = true; au.preload = "none"; au.src = h.media;
      row.appendChild(au);
      if (h.duration !== undefined) row.appendChild(el("span", "duration", duration(h.duration)));
      div.appendChild(row);
    }
    if (h.caption) div.appendChild(el("div", "caption", h.caption));
    if (h.text) div.appendChild(el("div", "text", h.text));
    const n = el("div", "name", h.name);
    n.title = h.name;
    div.appendChild(n);
    const more = el("button", "more link", "more like this");
    more.type = "button";
    more.addEventListener("click", () => {
      state.query = { item: h.id, name: h.caption || h.name, thumb };
      $("q").value = "";
      search(true);
      window.scrollTo({ top: 0, behavior: "smooth" });
    });
    div.appendChild(more);
    return div;
  }

  function schedule() {
    clearTimeout(state.timer);
    state.timer = setTimeout(() => search(false), 40);
  }

  function requestBody(modality) {
    const body = {};
    const q = state.query;
    if (q.text) body.text = q.text;
    else if (q.item !== undefined) body.item = q.item;
    else body.upload = q.upload;
    body.k = Number($("k").value);
    body.modality = modality || null;
    if (state.info.bundle) {
      if (state.preset === "custom") body.factors = Object.assign({}, state.factors);
      else body.preset = state.preset;
    }
    return body;
  }

  async function search(push) {
    showActive();
    if (!state.query) {
      $("results").replaceChildren();
      $("empty").hidden = false;
      setStatus("");
      if (push) history.pushState(null, "", toURL());
      return;
    }
    $("empty").hidden = true;
    if (push) history.pushState(null, "", toURL());
    else history.replaceState(null, "", toURL());
    const seq = ++state.seq;
    const grid = $("results");
    document.body.classList.add("loading");
    setStatus("Searching …", "muted busy");
    const mods = state.modality ? [state.modality] : Object.keys(state.info.modalities);
    try {
      const t0 = performance.now();
      const post = (m) => api("/api/search", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(requestBody(m)),
      });
      const answers = await Promise.all(mods.map(post));
      if (seq !== state.seq) return; // a newer request is on its way
      const ms = Math.round(performance.now() - t0);
      const server = Math.max(...answers.map((a) => a.ms));
      if (mods.length === 1) {
        grid.replaceChildren(el("div", "grid"));
        grid.firstChild.append(...answers[0].hits.map(card));
      } else {
        const groups = answers.map((a, i) => {
          const sec = el("section", "group");
          const h = el("h2", "", NAMES[mods[i]] || cap(mods[i]));
          h.appendChild(el("span", "muted", ` top ${a.hits.length} of ${state.info.modalities[mods[i]]}`));
          const g = el("div", "grid");
          g.append(...a.hits.map(card));
          sec.append(h, g);
          return sec;
        });
        grid.replaceChildren(...groups);
      }
      grid.classList.remove("stale");
      const n = answers.reduce((a, b) => a + b.hits.length, 0);
      setStatus(`${n} results for ${label()} · server ${server} ms, round trip ${ms} ms`);
    } catch (e) {
      if (seq !== state.seq) return;
      grid.classList.add("stale");
      setStatus(e.message, "error");
    } finally {
      if (seq === state.seq) document.body.classList.remove("loading");
    }
  }

  function label() {
    const q = state.query;
    if (q.text) return `“${q.text}”`;
    if (q.upload) return `${q.modality || "file"} ${q.name}`;
    return `item ${q.item} (${q.name})`;
  }

  function submitText() {
    const text = $("q").value.trim();
    if (!text) return;
    state.query = { text };
    search(true);
  }

  async function upload(file) {
    if (!file) return;
    if (file.size > state.info.max_upload) {
      $("results").classList.add("stale");
      setStatus(`${file.name}: larger than the upload limit ` +
        `(${Math.round(state.info.max_upload / 1048576)} MB)`, "error");
      return;
    }
    const form = new FormData();
    form.append("file", file, file.name);
    document.body.classList.add("loading");
    setStatus(`Uploading and decoding ${file.name} …`, "muted busy");
    try {
      const res = await api("/api/upload", { method: "POST", body: form });
      state.previews[res.upload] = URL.createObjectURL(file);
      state.query = { upload: res.upload, name: res.name, modality: res.modality };
      $("q").value = "";
      search(true);
    } catch (e) {
      document.body.classList.remove("loading");
      $("results").classList.add("stale");
      setStatus(e.message, "error");
    }
  }

  async function init() {
    try {
      state.info = await api("/api/info");
    } catch (e) {
      setStatus(e.message, "error");
      return;
    }
    buildControls(state.info);
    fromURL();
    $("search-form").addEventListener("submit", (ev) => { ev.preventDefault(); submitText(); });
    $("k").addEventListener("change", () => search(true));
    $("preset").addEventListener("change", () => { applyPreset($("preset").value); search(true); });
    $("file").addEventListener("change", (ev) => { upload(ev.target.files[0]); ev.target.value = ""; });
    $("active-clear").addEventListener("click", () => { state.query = null; search(true); });
    const drop = $("drop");
    drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (ev) => {
      ev.preventDefault(); drop.classList.remove("over");
      upload(ev.dataTransfer.files[0]);
    });
    window.addEventListener("popstate", () => { fromURL(); search(false); });
    await search(false);
    document.body.dataset.ready = "1";
  }

  init();
})();
