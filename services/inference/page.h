/* page.h: the web page of GET /, the lesson's "upload a picture, get its
 * class" app: pick or drop an image, or paste a URL; the predictions show
 * as bars. Plain HTML, CSS (/app.css) and JavaScript (/app.js), no inline
 * script or style, so the page's Content-Security-Policy allows scripts
 * and styles from this server only; labels go in as text, never as HTML.
 * It fits a phone's screen. */
#ifndef URSA_INFERENCE_PAGE_H
#define URSA_INFERENCE_PAGE_H

static const char page_html[] =
    "<!doctype html>\n"
    "<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    "<title>ursa: what is in this picture?</title>\n"
    "<link rel=\"stylesheet\" href=\"app.css\">\n"
    "<script src=\"app.js\" defer></script>\n"
    "</head><body>\n"
    "<h1>What is in this picture?</h1>\n"
    "<div id=\"drop\" tabindex=\"0\">Drop an image here, or tap to pick one"
    "<input id=\"file\" type=\"file\" accept=\"image/*\" hidden></div>\n"
    "<form id=\"urlform\"><input id=\"url\" type=\"url\" placeholder=\"or paste an image URL\">"
    "<button>Classify</button></form>\n"
    "<img id=\"preview\" alt=\"\">\n"
    "<div id=\"error\" role=\"alert\"></div>\n"
    "<div id=\"results\" aria-live=\"polite\"></div>\n"
    "<div id=\"model\"></div>\n"
    "</body></html>\n";

static const char page_css[] =
    "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:40rem;padding:1rem;color:#222}\n"
    "h1{font-size:1.4rem;margin:.2rem 0 1rem}\n"
    "#drop{border:2px dashed #888;border-radius:.6rem;padding:1.5rem;text-align:center;"
    "cursor:pointer}\n"
    "#drop.over{background:#eef5ff;border-color:#36c}\n"
    "#preview{max-width:100%;max-height:16rem;display:none;margin:1rem auto;border-radius:.4rem}\n"
    "form{display:flex;gap:.5rem;margin:1rem 0}\n"
    "input[type=url]{flex:1;min-width:0;padding:.5rem;font-size:1rem}\n"
    "button{padding:.5rem 1rem;font-size:1rem}\n"
    ".row{display:flex;align-items:center;gap:.5rem;margin:.3rem 0}\n"
    ".label{width:8rem;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}\n"
    ".bar{flex:1;background:#eee;border-radius:.3rem;height:1.2rem}\n"
    ".fill{background:#36c;height:100%;border-radius:.3rem}\n"
    ".pct{width:4rem;text-align:right;font-variant-numeric:tabular-nums}\n"
    "#error{color:#b00}\n"
    "#model{color:#666;font-size:.85rem}\n";

static const char page_js[] =
    "const $ = id => document.getElementById(id);\n"
    "function show(r) {\n"
    "  $('error').textContent = '';\n"
    "  const out = $('results');\n"
    "  out.innerHTML = '';\n"
    "  for (const [label, p] of r.predictions) {\n"
    "    const row = document.createElement('div'); row.className = 'row';\n"
    "    const l = document.createElement('span'); l.className = 'label'; l.textContent = label;\n"
    "    const bar = document.createElement('div'); bar.className = 'bar';\n"
    "    const fill = document.createElement('div'); fill.className = 'fill';\n"
    "    fill.style.width = (100 * p).toFixed(1) + '%'; bar.appendChild(fill);\n"
    "    const pct = document.createElement('span'); pct.className = 'pct';\n"
    "    pct.textContent = (100 * p).toFixed(1) + '%';\n"
    "    row.append(l, bar, pct); out.appendChild(row);\n"
    "  }\n"
    "  $('model').textContent = 'model ' + r.model;\n"
    "}\n"
    "async function answer(res) {\n"
    "  const body = await res.json().catch(() => ({error: 'HTTP ' + res.status}));\n"
    "  if (!res.ok) { $('results').innerHTML = ''; $('error').textContent = body.error || "
    "('HTTP ' + res.status); return; }\n"
    "  show(body);\n"
    "}\n"
    "async function classifyFile(f) {\n"
    "  if (!f) return;\n"
    "  $('preview').src = URL.createObjectURL(f); $('preview').style.display = 'block';\n"
    "  const fd = new FormData(); fd.append('file', f);\n"
    "  try { await answer(await fetch('v1/classify?top=5', {method: 'POST', body: fd})); }\n"
    "  catch (e) { $('error').textContent = String(e); }\n"
    "}\n"
    "$('drop').onclick = () => $('file').click();\n"
    "$('drop').onkeydown = e => { if (e.key === 'Enter' || e.key === ' ') $('file').click(); };\n"
    "$('file').onchange = () => classifyFile($('file').files[0]);\n"
    "$('drop').ondragover = e => { e.preventDefault(); $('drop').classList.add('over'); };\n"
    "$('drop').ondragleave = () => $('drop').classList.remove('over');\n"
    "$('drop').ondrop = e => { e.preventDefault(); $('drop').classList.remove('over');\n"
    "  classifyFile(e.dataTransfer.files[0]); };\n"
    "$('urlform').onsubmit = async e => {\n"
    "  e.preventDefault();\n"
    "  const u = $('url').value.trim(); if (!u) return;\n"
    "  $('preview').src = u; $('preview').style.display = 'block';\n"
    "  try { await answer(await fetch('v1/classify-url?top=5&url=' + encodeURIComponent(u))); }\n"
    "  catch (e) { $('error').textContent = String(e); }\n"
    "};\n";

/* what the page's Content-Security-Policy allows: this server's script,
 * style and API; previews of pasted image URLs */
#define PAGE_CSP                                                                               \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data: "     \
    "http: https:; connect-src 'self'; form-action 'self'; base-uri 'none'; "                  \
    "frame-ancestors 'none'"

#endif
