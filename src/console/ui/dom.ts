/**
 * The page's only way to build DOM. Every piece of data becomes a text node (strings and numbers
 * passed as children, `textContent`), never markup: nothing in this page parses HTML, so a payload,
 * a log line or an error holding `<script>` shows as those characters and runs nothing. Attributes
 * are set one by one with `setAttribute` (never `style`, which the Content-Security-Policy refuses;
 * the one computed style, a chart bar's height, is an SVG attribute).
 */

/** What {@link h} accepts as a child: nodes, text, or nothing (skipped). */
export type Child = Node | string | number | false | null | undefined | readonly Child[];

/** Attributes and event listeners of {@link h}: `on<Event>` keys take a listener, `true` sets a boolean attribute. */
export type Attributes = Record<string, string | number | boolean | undefined | null | EventListener>;

function append(parent: Node, child: Child): void {
  if (child === null || child === undefined || child === false || child === "") return;
  if (Array.isArray(child)) {
    for (const c of child as readonly Child[]) append(parent, c);
  } else if (child instanceof Node) {
    parent.appendChild(child);
  } else {
    parent.appendChild(document.createTextNode(String(child)));
  }
}

function applyAttributes(el: Element, attributes: Attributes): void {
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "style" || name === "innerHTML" || name.startsWith("on")) {
      throw new Error(`h(): refusing attribute ${name}`);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
}

/**
 * Creates an HTML element with attributes and children; strings become text nodes.
 *
 * @example
 * ```ts
 * h("p", { class: "error" }, "Failed: ", error.message)
 * ```
 */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attributes: Attributes = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  applyAttributes(el, attributes);
  append(el, children);
  return el;
}

const SVG = "http://www.w3.org/2000/svg";

/** Creates an SVG element (charts). */
export function svg(tag: string, attributes: Attributes = {}, ...children: Child[]): SVGElement {
  const el = document.createElementNS(SVG, tag);
  applyAttributes(el, attributes);
  append(el, children);
  return el;
}

/** What identifies a focusable element across a re-render: its tag, id, label, href or text. */
function focusKey(el: Element): string {
  return [el.tagName, el.id, el.getAttribute("aria-label"), el.getAttribute("href"), el.getAttribute("name"), el.textContent].join("\u0000");
}

/**
 * Replaces every child of `el` with `children`. When focus was inside `el` (a live view re-renders
 * while someone tabs through it), it moves to the matching element of the new content, so a
 * keyboard user does not fall back to the top of the page.
 */
export function replace(el: Element, ...children: Child[]): void {
  const active = document.activeElement;
  const key = active && active !== el && el.contains(active) ? focusKey(active) : undefined;
  el.replaceChildren();
  append(el, children);
  if (key === undefined) return;
  for (const candidate of el.querySelectorAll<HTMLElement>("a, button, input, select, textarea, [tabindex]")) {
    if (focusKey(candidate) === key) {
      candidate.focus();
      return;
    }
  }
}

/** A `<dl>` of label/value pairs, skipping pairs whose value is undefined. */
export function definitions(pairs: ReadonlyArray<readonly [string, Child]>): HTMLDListElement {
  const dl = h("dl", { class: "defs" });
  for (const [term, value] of pairs) {
    if (value === undefined) continue;
    dl.append(h("div", {}, h("dt", {}, term), h("dd", {}, value)));
  }
  return dl;
}

/** A column of {@link table}: its heading and how a row fills its cell. */
export interface Column<Row> {
  label: string;
  cell: (row: Row) => Child;
  className?: string;
}

/** One `<tr>` of {@link table}; each cell carries its column's heading as `data-label`. */
export function tableRow<Row>(columns: ReadonlyArray<Column<Row>>, row: Row, key?: string): HTMLTableRowElement {
  const tr = h("tr", { "data-key": key });
  for (const column of columns) tr.append(h("td", { "data-label": column.label, class: column.className }, column.cell(row)));
  return tr;
}

/** The `<thead>` of `columns`. */
export function tableHead<Row>(columns: ReadonlyArray<Column<Row>>): HTMLTableSectionElement {
  return h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.className }, c.label))));
}

/**
 * A table of rows. On narrow screens the stylesheet stacks each row as a card and labels each cell
 * from its `data-label` (the column's heading), so nothing scrolls sideways.
 */
export function table<Row>(options: {
  caption: string;
  columns: ReadonlyArray<Column<Row>>;
  rows: readonly Row[];
  empty: string;
  rowKey?: (row: Row) => string;
  captionHidden?: boolean;
}): HTMLElement {
  if (options.rows.length === 0) return h("p", { class: "empty" }, options.empty);
  return h(
    "table",
    { class: "grid" },
    h("caption", { class: options.captionHidden ? "visually-hidden" : undefined }, options.caption),
    tableHead(options.columns),
    h("tbody", {}, options.rows.map((row) => tableRow(options.columns, row, options.rowKey?.(row)))),
  );
}
