// "copy expanded": copy a chunk with every chunk it uses expanded (the text of its hidden <pre>).
document.addEventListener("click", (event) => {
  const button = event.target.closest("button.chunk-copy");
  if (!button) return;
  const pre = document.getElementById(button.dataset.target);
  if (!pre) return;
  const text = pre.innerText || pre.textContent;
  const done = (label) => {
    button.textContent = label;
    setTimeout(() => { button.textContent = "copy expanded"; }, 1500);
  };
  const fallback = () => {
    const area = document.createElement("textarea");
    area.value = text;
    document.body.appendChild(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    done(ok ? "copied" : "copy failed");
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(() => done("copied"), fallback);
  } else {
    fallback();
  }
});
