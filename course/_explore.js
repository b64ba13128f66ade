// The browser side of course.explore (an anywidget ES module): it draws the pictures the Python
// side computed and sends what the learner does. No maths here: the canvas is downsampled to a
// RASTER x RASTER grey raster and sent, throttled, while drawing; Python centres it the MNIST way.

const THROTTLE_MS = 120; // at most ~8 updates a second while drawing: the kernel never falls behind
const CANVAS = 240;

const CSS = `
.cx-root { display: flex; flex-wrap: wrap; gap: 16px; font: 13px sans-serif; color: #222; }
.cx-col { display: flex; flex-direction: column; gap: 6px; }
.cx-canvas { background: #000; touch-action: none; cursor: crosshair; border: 1px solid #888; }
.cx-row { display: flex; gap: 6px; align-items: center; flex-wrap: wrap; }
.cx-input { image-rendering: pixelated; width: 112px; height: 112px; border: 1px solid #888; }
.cx-bars { width: 210px; }
.cx-bar { display: flex; align-items: center; gap: 4px; height: 18px; }
.cx-bar-label { width: 48px; text-align: right; overflow: hidden; white-space: nowrap; }
.cx-bar-track { flex: 1; background: #eee; height: 12px; }
.cx-bar-fill { background: #5a7bb5; height: 12px; }
.cx-bar-top .cx-bar-fill { background: #d9534f; }
.cx-maps { max-width: 380px; }
.cx-montage { image-rendering: pixelated; cursor: pointer; display: block; }
.cx-detail { max-width: 380px; }
.cx-detail img { image-rendering: pixelated; border: 1px solid #888; margin-right: 8px; }
.cx-message { color: #a15c00; max-width: 640px; }
`;

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function throttle(fn, wait) {
  let last = 0;
  let timer = null;
  return () => {
    const now = Date.now();
    clearTimeout(timer);
    if (now - last >= wait) {
      last = now;
      fn();
    } else {
      timer = setTimeout(() => { last = Date.now(); fn(); }, wait - (now - last));
    }
  };
}

function render({ model, el: root }) {
  root.append(el("style", { text: CSS }));
  const box = el("div", { class: "cx-root explore-root" });
  root.append(box);

  // ---- left: canvas, clear, picker, upload, input + overlay
  const [height, width] = model.get("shape");
  const canvas = el("canvas", { class: "cx-canvas explore-canvas" });
  canvas.width = CANVAS;
  canvas.height = Math.round((CANVAS * height) / width);
  const ctx = canvas.getContext("2d");
  const clear = el("button", { class: "explore-clear", text: "Clear" });
  const picker = el("input", { type: "number", min: "0", value: "0", class: "explore-pick", style: "width:64px" });
  const upload = el("input", { type: "file", accept: "image/*", class: "explore-upload" });
  const input = el("img", { class: "cx-input explore-input", alt: "the model's input" });
  const overlay = el("select", { class: "explore-overlay" });
  for (const [value, label] of [["none", "no overlay"], ["grad_cam", "Grad-CAM"], ["saliency", "saliency"]]) {
    overlay.append(el("option", { value, text: label }));
  }
  const pickRow = el("div", { class: "cx-row" }, [el("span", { text: "test image" }), picker]);
  const left = el("div", { class: "cx-col" }, [
    el("b", { text: "Draw a digit" }), canvas,
    el("div", { class: "cx-row" }, [clear, upload]), pickRow,
    el("div", { class: "cx-row" }, [input, overlay]),
  ]);

  // ---- middle: bars
  const bars = el("div", { class: "cx-bars explore-bars" });
  const middle = el("div", { class: "cx-col" }, [el("b", { text: "Prediction" }), bars]);

  // ---- right: normalization, epoch slider, montages, detail
  const norm = el("select", { class: "explore-norm" });
  for (const [value, label] of [["per_map", "each map on its own"], ["per_layer", "one scale per layer"],
                                ["robust", "robust (1-99th percentile)"]]) {
    norm.append(el("option", { value, text: label }));
  }
  const epoch = el("input", { type: "range", min: "0", value: "0", class: "explore-epoch" });
  const epochLabel = el("span", { class: "explore-epoch-label" });
  const epochRow = el("div", { class: "cx-row" }, [el("span", { text: "epoch" }), epoch, epochLabel]);
  const maps = el("div", { class: "cx-maps explore-maps" });
  const detail = el("div", { class: "cx-detail explore-detail" });
  const right = el("div", { class: "cx-col" }, [
    el("div", { class: "cx-row" }, [el("b", { text: "Feature maps" }), el("span", { text: "scale:" }), norm]),
    epochRow, maps, detail,
  ]);
  const message = el("div", { class: "cx-message explore-message" });
  box.append(left, middle, right, message);

  // ---- drawing
  const blank = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); };
  blank();
  const raster = model.get("raster");
  const small = el("canvas");
  small.width = raster;
  small.height = raster;
  const smallCtx = small.getContext("2d", { willReadFrequently: true });
  const send = () => {
    smallCtx.imageSmoothingEnabled = true;
    smallCtx.drawImage(canvas, 0, 0, raster, raster);
    const rgba = smallCtx.getImageData(0, 0, raster, raster).data;
    const grey = new Uint8Array(raster * raster);
    for (let i = 0; i < grey.length; i++) grey[i] = rgba[4 * i];
    model.set("drawing", new DataView(grey.buffer));
    model.save_changes();
  };
  const sendSoon = throttle(send, THROTTLE_MS);
  let drawing = false;
  let lastPoint = null;
  const point = (event) => {
    const rect = canvas.getBoundingClientRect();
    return [(event.clientX - rect.left) * (canvas.width / rect.width),
            (event.clientY - rect.top) * (canvas.height / rect.height)];
  };
  const stroke = (to) => {
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = canvas.width / 12;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(...(lastPoint || to));
    ctx.lineTo(...to);
    ctx.stroke();
    lastPoint = to;
  };
  canvas.addEventListener("pointerdown", (event) => {
    drawing = true;
    lastPoint = null;
    canvas.setPointerCapture?.(event.pointerId);
    stroke(point(event));
    sendSoon();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    stroke(point(event));
    sendSoon();
  });
  const stop = () => { if (drawing) { drawing = false; send(); } };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointerleave", stop);
  canvas.addEventListener("pointercancel", stop);
  clear.addEventListener("click", () => { blank(); send(); });

  // ---- other controls
  picker.addEventListener("change", () => {
    model.set("image_index", Number(picker.value));
    model.save_changes();
  });
  upload.addEventListener("change", async () => {
    const file = upload.files[0];
    if (!file) return;
    model.set("upload", new DataView(await file.arrayBuffer()));
    model.save_changes();
  });
  overlay.addEventListener("change", () => { model.set("overlay", overlay.value); model.save_changes(); });
  norm.addEventListener("change", () => { model.set("normalization", norm.value); model.save_changes(); });
  epoch.addEventListener("input", () => {
    const epochs = model.get("epochs");
    const index = Number(epoch.value);
    model.set("epoch", index >= epochs.length ? -1 : index);
    model.save_changes();
  });

  // ---- drawing what Python computed
  const drawInput = () => {
    input.src = model.get("overlay_png") || model.get("input_png");
  };
  const drawBars = () => {
    bars.replaceChildren();
    model.get("bars").forEach(([label, p], i) => {
      const fill = el("div", { class: "cx-bar-fill", style: `width:${(100 * p).toFixed(1)}%` });
      bars.append(el("div", { class: `cx-bar explore-bar${i === 0 ? " cx-bar-top" : ""}`, "data-label": label }, [
        el("span", { class: "cx-bar-label", text: label }),
        el("div", { class: "cx-bar-track" }, [fill]),
        el("span", { text: `${(100 * p).toFixed(1)}%` }),
      ]));
    });
  };
  const drawMaps = () => {
    maps.replaceChildren();
    for (const m of model.get("maps")) {
      const naturalWidth = m.ncols * (m.width + m.pad) - m.pad;
      const shownWidth = Math.min(380, 3 * naturalWidth); // pixelated: every map pixel a block
      const more = m.shown < m.count ? ` (first ${m.shown} of ${m.count})` : "";
      const img = el("img", { class: "cx-montage explore-montage", "data-layer": m.layer, src: m.png,
                              style: `width:${shownWidth}px`, title: "click a map to enlarge it" });
      img.addEventListener("click", (event) => {
        const scale = naturalWidth / img.clientWidth;
        const x = event.offsetX * scale;
        const y = event.offsetY * scale;
        const col = Math.floor(x / (m.width + m.pad));
        const row = Math.floor(y / (m.height + m.pad));
        const channel = row * m.ncols + col;
        if (col < m.ncols && channel < m.shown) {
          model.set("selected", [m.layer, channel]);
          model.save_changes();
        }
      });
      maps.append(el("div", {}, [el("div", { text: `${m.layer}: ${m.count} maps ${m.height}x${m.width}${more}` }), img]));
    }
  };
  const drawDetail = () => {
    const d = model.get("detail");
    detail.replaceChildren();
    if (!d || !d.map_png) return;
    const row = el("div", { class: "cx-row" }, [el("img", { class: "explore-detail-map", src: d.map_png })]);
    if (d.kernel_png) row.append(el("img", { class: "explore-detail-kernel", src: d.kernel_png }));
    detail.append(row, el("div", { text: d.text }));
  };
  const drawControls = () => {
    const count = model.get("image_count");
    pickRow.style.display = count ? "" : "none";
    picker.max = String(Math.max(0, count - 1));
    const epochs = model.get("epochs");
    epochRow.style.display = epochs.length ? "" : "none";
    epoch.max = String(epochs.length); // the last position is the live model
    const current = model.get("epoch");
    epoch.value = String(current < 0 ? epochs.length : current);
    epochLabel.textContent = current < 0 ? "live model" : (epochs[current] === 0 ? "initialisation" : `after epoch ${epochs[current]}`);
    norm.value = model.get("normalization");
    overlay.value = model.get("overlay");
    message.textContent = model.get("message");
  };
  const drawAll = () => {
    drawInput(); drawBars(); drawMaps(); drawDetail(); drawControls();
    box.dataset.updates = String(model.get("updates"));
  };
  drawAll();
  model.on("change:updates", drawAll);
  model.on("change:detail", drawDetail);
  model.on("change:message", drawControls);
}

export default { render };
