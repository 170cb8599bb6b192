// Reader study page: integer zoom (pixels stay square and unsmoothed), keyboard shortcuts,
// and no double submission. The page works without this script (native size, mouse only).
(function () {
  "use strict";
  var img = document.getElementById("tile");
  var slider = document.getElementById("zoom");
  var label = document.getElementById("zoom-label");
  var form = document.getElementById("answer-form");
  if (!img || !slider || !form) return;
  var KEY = "reader-study-zoom";

  function setZoom(z) {
    z = Math.max(1, Math.min(8, Math.round(z)));
    slider.value = String(z);
    label.textContent = z === 1 ? "1\u00d7 (native)" : z + "\u00d7";
    if (img.naturalWidth) {
      img.style.width = img.naturalWidth * z + "px";
      img.style.height = img.naturalHeight * z + "px";
    }
    try { localStorage.setItem(KEY, String(z)); } catch (e) { /* private mode */ }
  }
  function saved() {
    try { return parseInt(localStorage.getItem(KEY) || "1", 10) || 1; } catch (e) { return 1; }
  }
  function apply() { setZoom(parseInt(slider.value, 10)); }

  slider.addEventListener("input", apply);
  document.getElementById("zoom-in").addEventListener("click", function () { setZoom(+slider.value + 1); });
  document.getElementById("zoom-out").addEventListener("click", function () { setZoom(+slider.value - 1); });
  img.addEventListener("click", function () { setZoom(+slider.value >= 8 ? 1 : +slider.value + 1); });
  slider.value = String(saved());
  if (img.complete) apply(); else img.addEventListener("load", apply);

  var sent = false;
  form.addEventListener("submit", function (ev) {
    if (sent) { ev.preventDefault(); return; }
    sent = true;
  });
  function submitWith(call) {
    if (sent) return;
    var button = document.getElementById(call === "real" ? "call-real" : "call-synthetic");
    if (form.requestSubmit) form.requestSubmit(button); else button.click();
  }
  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var k = ev.key;
    if (k >= "1" && k <= "5") {
      var radio = form.querySelector('input[name="score"][value="' + k + '"]');
      if (radio) radio.checked = true;
    } else if (k === "r" || k === "R") { submitWith("real"); }
    else if (k === "s" || k === "S") { submitWith("synthetic"); }
    else if (k === "+" || k === "=") { setZoom(+slider.value + 1); }
    else if (k === "-" || k === "_") { setZoom(+slider.value - 1); }
  });
})();
