// Building the page from data without ever parsing a string as HTML: every value the API returns
// (a tag, a check's output) becomes a text node, so none can become markup. The page's CSP
// (Trusted Types) refuses innerHTML anyway.

export type Child = Node | string | null | undefined | false;

export interface Props {
  readonly className?: string;
  readonly title?: string;
  /** data-* attributes, for styling and for tests that look for a member's status. */
  readonly data?: Readonly<Record<string, string>>;
  readonly colSpan?: number;
}

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, props: Props = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (props.className !== undefined) el.className = props.className;
  if (props.title !== undefined) el.title = props.title;
  if (props.colSpan !== undefined && el instanceof HTMLTableCellElement) el.colSpan = props.colSpan;
  for (const [key, value] of Object.entries(props.data ?? {})) el.dataset[key] = value;
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child);
  }
  return el;
}

export function byId<T extends HTMLElement>(id: string, type: new () => T): T {
  const el = document.getElementById(id);
  if (!(el instanceof type)) throw new Error(`the page has no ${type.name} #${id}`);
  return el;
}

/** Shows `message` in `el`, or hides it when there is none. */
export function notice(el: HTMLElement, message: string | undefined): void {
  el.hidden = message === undefined;
  el.textContent = message ?? "";
}
