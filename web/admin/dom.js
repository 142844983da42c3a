// dom.js: building the page without HTML strings. Every value from the API goes in as
// text (textContent or a text node), never as markup, so a name such as
// <img src=x onerror=alert(1)> shows as those characters and runs nothing.

// h("tr", {class: "x", onclick: fn, dataset: {id: 1}}, child, "text", [more]) -> element
export function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
        if (v === undefined || v === null || v === false) continue;
        if (k === "class") el.className = v;
        else if (k === "dataset") Object.assign(el.dataset, v);
        else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
        else if (k === "hidden" || k === "disabled" || k === "required") el[k] = Boolean(v);
        else if (k === "value") el.value = v;
        else el.setAttribute(k, String(v));
    }
    append(el, children);
    return el;
}

function append(el, children) {
    for (const c of children) {
        if (c === undefined || c === null || c === false) continue;
        if (Array.isArray(c)) append(el, c);
        else if (c instanceof Node) el.appendChild(c);
        else el.appendChild(document.createTextNode(String(c)));
    }
}

// Replace the children of el.
export function fill(el, ...children) {
    el.replaceChildren();
    append(el, children);
    return el;
}

// A table: columns [{title, cell(row) -> node or text}], rows [...].
export function table(columns, rows, empty) {
    const head = h("tr", null, columns.map((c) => h("th", { scope: "col" }, c.title)));
    const body = rows.map((r) => h("tr", null, columns.map((c) => h("td", null, c.cell(r)))));
    if (rows.length === 0) {
        body.push(h("tr", null, h("td", { colspan: columns.length, class: "empty" }, empty || "nothing")));
    }
    return h("table", null, h("thead", null, head), h("tbody", null, body));
}

// A value as text: null and undefined as an em dash, objects as JSON.
export function text(v) {
    if (v === undefined || v === null || v === "") return "\u2014";
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
}

// An ISO time or a Unix time (seconds) as a readable UTC time; anything else as text.
export function when(v) {
    if (v === undefined || v === null || v === "") return "\u2014";
    const d = typeof v === "number" ? new Date(v * 1000) : new Date(v);
    if (Number.isNaN(d.getTime())) return String(v);
    return d.toISOString().replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC");
}
