// The console's few behaviours, from a static file so the Content-Security-Policy allows no inline script.
// Delegated from the document, so they keep working on content HTMX swaps in.

// <input type="checkbox" data-select-all="CSS selector">: ticks or unticks every checkbox the selector finds
document.addEventListener("change", (event) => {
  const box = event.target.closest("[data-select-all]");
  if (!box) return;
  document.querySelectorAll(box.dataset.selectAll).forEach((c) => { c.checked = box.checked; });
});

// <button data-needs-reason="CSS selector" data-confirm="question">: refuses without a reason, then asks
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-needs-reason]");
  if (!button) return;
  const reason = document.querySelector(button.dataset.needsReason);
  if (!reason || !reason.value) {
    alert("Write a reason first.");
    event.preventDefault();
  } else if (button.dataset.confirm && !confirm(button.dataset.confirm)) {
    event.preventDefault();
  }
});

// <div hx-trigger="every …" data-poll-paused-by="CSS selector">: skips a refresh while the selector finds anything
// (e.g. ticked rows: a refresh would drop the selection)
document.addEventListener("htmx:confirm", (event) => {
  const pausedBy = event.detail.elt.dataset && event.detail.elt.dataset.pollPausedBy;
  if (pausedBy && document.querySelector(pausedBy)) event.preventDefault();
});
