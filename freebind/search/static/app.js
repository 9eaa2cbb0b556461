// freebind search page: plain JavaScript, no build step, no network beyond this server.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const state = { info: null, query: null, factors: {}, seq: 0, timer: null };

  function setStatus(text, isError) {
    const el = $("status");
    el.textContent = text;
    el.className = isError ? "error" : "muted";
  }

  async function api(path, options) {
    const res = await fetch(path, options);
    let body = null;
    try { body = await res.json(); } catch (e) { body = { error: res.statusText }; }
    if (!res.ok) throw new Error(body.error || res.statusText);
    return body;
  }

  function label(c) {
    const side = c.kind === "c" ? "combination" : "displacement";
    return `${c.bond} ${c.modality} · ${side} with ${c.expert}`;
  }

  function buildControls(info) {
    $("target").textContent = `${info.expression} · ${info.items} items (` +
      Object.entries(info.modalities).map(([m, n]) => `${n} ${m}`).join(", ") + ")";
    const mod = $("modality");
    for (const m of Object.keys(info.modalities)) {
      const o = document.createElement("option");
      o.value = m; o.textContent = m; mod.appendChild(o);
    }
    const preset = $("preset");
    const names = info.presets.length ? info.presets : ["default"];
    for (const p of names) {
      const o = document.createElement("option");
      o.value = p; o.textContent = p; preset.appendChild(o);
    }
    preset.value = info.preset && names.includes(info.preset) ? info.preset :
      (names.includes("default") ? "default" : names[0]);
    if (!info.bundle) preset.disabled = true;
    const box = $("sliders");
    for (const c of info.controls) {
      const key = `${c.bond}.${c.modality}`;
      const wrap = document.createElement("div");
      wrap.className = "slider";
      const id = `f-${c.bond}-${c.modality}`;
      wrap.innerHTML = `<label for="${id}">${label(c)}</label>` +
        `<input type="range" id="${id}" min="0" max="1" step="0.05" data-key="${key}">` +
        `<output id="${id}-v"></output>`;
      box.appendChild(wrap);
      const input = wrap.querySelector("input");
      input.value = c.value;
      state.factors[key] = c.value;
      wrap.querySelector("output").textContent = Number(c.value).toFixed(2);
      input.addEventListener("input", () => {
        state.factors[key] = Number(input.value);
        wrap.querySelector("output").textContent = Number(input.value).toFixed(2);
        schedule();
      });
    }
  }

  function applyPreset(name) {
    const values = (state.info.preset_values || {})[name] || {};
    for (const input of document.querySelectorAll("#sliders input")) {
      const key = input.dataset.key;
      if (key in values) {
        input.value = values[key];
        state.factors[key] = values[key];
        input.parentElement.querySelector("output").textContent = Number(values[key]).toFixed(2);
      }
    }
  }

  function schedule() {
    clearTimeout(state.timer);
    state.timer = setTimeout(run, 40);
  }

  function card(h) {
    const div = document.createElement("div");
    div.className = "card";
    div.dataset.id = h.id;
    const head = document.createElement("div");
    head.className = "head";
    head.innerHTML = `<span>#${h.rank} <span class="tag">${h.modality}</span></span>` +
      `<span class="score">${h.score.toFixed(4)}</span>`;
    div.appendChild(head);
    if (h.modality === "image" && h.media) {
      const img = document.createElement("img");
      img.src = h.media; img.alt = h.name; img.loading = "lazy";
      div.appendChild(img);
    } else if (h.modality === "audio" && h.media) {
      const au = document.createElement("audio");
      au.controls = true; au.preload = "none"; au.src = h.media;
      div.appendChild(au);
    }
    if (h.text) {
      const t = document.createElement("div");
      t.className = "text"; t.textContent = h.text; div.appendChild(t);
    }
    const n = document.createElement("div");
    n.className = "name"; n.textContent = h.name; n.title = h.name;
    div.appendChild(n);
    const more = document.createElement("button");
    more.className = "more"; more.type = "button"; more.textContent = "more like this";
    more.addEventListener("click", () => {
      state.query = { item: h.id, label: `item ${h.id} (${h.name})` };
      $("upload-name").textContent = "";
      run();
    });
    div.appendChild(more);
    return div;
  }

  async function run() {
    if (!state.query) return;
    const seq = ++state.seq;
    const body = Object.assign({}, state.query);
    delete body.label;
    body.k = Number($("k").value);
    body.modality = $("modality").value || null;
    if (state.info.bundle) {
      body.preset = $("preset").value || null;
      body.factors = {};
      for (const [key, v] of Object.entries(state.factors)) body.factors[key] = v;
    }
    try {
      const t0 = performance.now();
      const res = await api("/api/search", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      if (seq !== state.seq) return; // a newer request is on its way
      const grid = $("results");
      grid.replaceChildren(...res.hits.map(card));
      const ms = Math.round(performance.now() - t0);
      setStatus(`${res.hits.length} results for ${state.query.label} · server ${res.ms} ms, ` +
        `round trip ${ms} ms`);
    } catch (e) {
      if (seq === state.seq) setStatus(e.message, true);
    }
  }

  async function upload(file) {
    if (!file) return;
    if (file.size > state.info.max_upload) {
      setStatus(`${file.name}: larger than the upload limit (${state.info.max_upload} bytes)`, true);
      return;
    }
    const form = new FormData();
    form.append("file", file, file.name);
    setStatus(`uploading ${file.name} …`);
    try {
      const res = await api("/api/upload", { method: "POST", body: form });
      state.query = { upload: res.upload, label: `${res.modality} ${res.name}` };
      $("upload-name").textContent = `${res.name} (${res.modality})`;
      run();
    } catch (e) {
      setStatus(e.message, true);
    }
  }

  async function init() {
    try {
      state.info = await api("/api/info");
    } catch (e) {
      setStatus(e.message, true);
      return;
    }
    buildControls(state.info);
    $("search-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const text = $("q").value.trim();
      if (!text) return;
      state.query = { text, label: `“${text}”` };
      $("upload-name").textContent = "";
      run();
    });
    $("modality").addEventListener("change", run);
    $("k").addEventListener("change", run);
    $("preset").addEventListener("change", () => { applyPreset($("preset").value); run(); });
    $("file").addEventListener("change", (ev) => upload(ev.target.files[0]));
    const drop = $("drop");
    drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (ev) => {
      ev.preventDefault(); drop.classList.remove("over");
      upload(ev.dataTransfer.files[0]);
    });
    document.body.dataset.ready = "1";
  }

  init();
})();
