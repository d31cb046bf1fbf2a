// The Airlock console: sign in, the instances the user may see, and terminals in tabs.

import "@xterm/xterm/css/xterm.css";
import "./style.css";
import { ApiError, Me, call, signIn, signOut, whoami } from "./api";
import { h, replace } from "./dom";
import { TerminalTab, describe } from "./terminal";

interface Instance {
  InstanceId: string;
  PingStatus?: string;
  Name?: string;
  ComputerName?: string;
  PlatformType?: string;
  PlatformName?: string;
  PlatformVersion?: string;
  IPAddress?: string;
  AgentVersion?: string;
}

const app = document.getElementById("app") as HTMLElement;
const tabs: TerminalTab[] = [];
let active: TerminalTab | null = null; // null: the Instances view
let me: Me | null = null;
let refresher = 0;

// --- theme ------------------------------------------------------------------------------------

function initialTheme(): "dark" | "light" {
  const saved = localStorage.getItem("airlock-theme");
  if (saved === "dark" || saved === "light") return saved;
  return window.matchMedia?.("(prefers-color-scheme: light)").matches ? "light" : "dark";
}

function setTheme(theme: "dark" | "light"): void {
  document.documentElement.dataset.theme = theme;
  localStorage.setItem("airlock-theme", theme);
  for (const t of tabs) t.setTheme(theme === "light");
}

setTheme(initialTheme());

function themeButton(): HTMLButtonElement {
  const b = h("button", { type: "button", class: "ghost" });
  const label = () => (b.textContent = document.documentElement.dataset.theme === "light" ? "Dark theme" : "Light theme");
  label();
  b.addEventListener("click", () => {
    setTheme(document.documentElement.dataset.theme === "light" ? "dark" : "light");
    label();
  });
  return b;
}

// --- sign in ----------------------------------------------------------------------------------

function signInView(): void {
  window.clearInterval(refresher);
  const error = h("p", { class: "error", role: "alert", id: "signin-error" });
  const user = h("input", { id: "user", name: "username", autocomplete: "username", required: true, autofocus: true });
  const pass = h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const mfa = h("input", {
    id: "mfa",
    name: "mfa",
    inputmode: "numeric",
    autocomplete: "one-time-code",
    pattern: "[0-9]{6}",
    maxlength: 6,
  });
  const mfaRow = h("div", { class: "field", hidden: true }, h("label", { for: "mfa" }, "MFA code"), mfa);
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h(
    "form",
    { class: "signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in to Airlock"),
    h("div", { class: "field" }, h("label", { for: "user" }, "IAM user name"), user),
    h("div", { class: "field" }, h("label", { for: "password" }, "Password"), pass),
    mfaRow,
    error,
    submit,
    h("p", { class: "hint" }, "An administrator sets your console password with ", h("code", {}, "airlock iam create-login-profile"), "."),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    submit.disabled = true;
    error.textContent = "";
    try {
      me = await signIn(user.value.trim(), pass.value, mfa.value.trim() || undefined);
      pass.value = "";
      shell();
    } catch (err) {
      if (err instanceof ApiError && err.code === "SignInFailed" && mfaRow.hidden) {
        // The broker does not say which part was wrong; offer the MFA field from now on.
        mfaRow.hidden = false;
      }
      error.textContent = err instanceof ApiError ? err.message : String(err);
      pass.focus();
    } finally {
      submit.disabled = false;
    }
  });
  replace(app, h("main", { class: "signin-page" }, h("div", { class: "corner" }, themeButton()), form));
  user.focus();
}

// --- the signed-in shell ------------------------------------------------------------------------

const tabList = h("div", { class: "tabs", role: "tablist", "aria-label": "Views" });
const content = h("div", { class: "content" });
const notice = h("p", { class: "error banner", role: "alert" });

function shell(): void {
  const user = me?.userName ?? "";
  const signOutButton = h("button", { type: "button", class: "ghost", onclick: () => void doSignOut() }, "Sign out");
  replace(
    app,
    h(
      "header",
      { class: "bar" },
      h("span", { class: "brand" }, "Airlock"),
      tabList,
      h("span", { class: "spacer" }),
      h("span", { class: "who", title: me?.arn ?? "" }, user, me?.mfaAuthenticated ? " · MFA" : ""),
      themeButton(),
      signOutButton,
    ),
    notice,
    content,
  );
  renderTabs();
  show(null);
}

async function doSignOut(): Promise<void> {
  for (const t of tabs.splice(0)) t.dispose();
  try {
    await signOut();
  } catch {
    // Already signed out.
  }
  me = null;
  signInView();
}

function renderTabs(): void {
  const instTab = h(
    "button",
    { type: "button", role: "tab", id: "tab-instances", "aria-selected": String(active === null), onclick: () => show(null) },
    "Instances",
  );
  const items: Node[] = [instTab];
  tabs.forEach((t, i) => {
    const tab = h(
      "button",
      {
        type: "button",
        role: "tab",
        class: `term-tab ${t.ended ? "ended" : ""}`,
        "aria-selected": String(active === t),
        onclick: () => show(t),
      },
      `${i + 1}: ${t.label}`,
    );
    const close = h("button", { type: "button", class: "close", "aria-label": `Close terminal ${t.label}`, onclick: () => void closeTab(t) }, "×");
    items.push(h("span", { class: "tab-wrap" }, tab, close));
  });
  replace(tabList, ...items);
}

function show(tab: TerminalTab | null): void {
  active = tab;
  renderTabs();
  for (const t of tabs) t.panel.hidden = t !== tab;
  const inst = document.getElementById("instances-view");
  if (tab === null) {
    if (inst) inst.hidden = false;
    else instancesView();
  } else {
    if (inst) inst.hidden = true;
    tab.refit();
    tab.term.focus();
  }
}

async function closeTab(t: TerminalTab): Promise<void> {
  await t.terminate();
  t.dispose();
  t.panel.remove();
  tabs.splice(tabs.indexOf(t), 1);
  show(null);
}

async function startSession(inst: Instance): Promise<void> {
  const label = inst.Name || inst.ComputerName || inst.InstanceId;
  const tab = new TerminalTab(inst.InstanceId, label, () => renderTabs());
  tabs.push(tab);
  content.append(tab.panel);
  show(tab);
  await tab.open();
}

// --- instances ----------------------------------------------------------------------------------

function instancesView(): void {
  const filter = h("input", { type: "search", id: "instance-filter", placeholder: "Filter by id, name, platform, IP…" });
  const count = h("span", { class: "muted", "aria-live": "polite" });
  const body = h("tbody");
  const error = h("p", { class: "error", role: "alert" });
  let all: Instance[] = [];

  const render = () => {
    const q = filter.value.trim().toLowerCase();
    const rows = all.filter((i) =>
      !q ||
      [i.InstanceId, i.Name, i.ComputerName, i.PlatformType, i.PlatformName, i.IPAddress, i.AgentVersion, i.PingStatus]
        .some((v) => (v ?? "").toLowerCase().includes(q)),
    );
    count.textContent = `${rows.length} of ${all.length} instances`;
    replace(
      body,
      ...rows.map((i) => {
        const online = i.PingStatus === "Online";
        const nameId = `name-${i.InstanceId}`;
        return h(
          "tr",
          {},
          h("td", {}, h("span", { class: `ping ${online ? "online" : "offline"}` }, i.PingStatus ?? "Unknown")),
          h("td", { id: nameId }, i.Name || i.ComputerName || "—"),
          h("td", { class: "mono" }, i.InstanceId),
          h("td", {}, [i.PlatformName, i.PlatformVersion].filter(Boolean).join(" ") || i.PlatformType || "—"),
          h("td", { class: "mono" }, i.IPAddress ?? "—"),
          h("td", { class: "mono" }, i.AgentVersion ?? "—"),
          h(
            "td",
            {},
            h(
              "button",
              { type: "button", class: "primary small", "aria-describedby": nameId, onclick: () => void startSession(i) },
              "Start session",
            ),
          ),
        );
      }),
    );
    if (rows.length === 0) {
      body.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, all.length ? "No instance matches the filter." : "No managed instances.")));
    }
  };

  const load = async () => {
    try {
      const list: Instance[] = [];
      let next: string | undefined;
      do {
        const r = await call<{ InstanceInformationList: Instance[]; NextToken?: string }>(
          "DescribeInstanceInformation",
          next ? { MaxResults: 50, NextToken: next } : { MaxResults: 50 },
        );
        list.push(...r.InstanceInformationList);
        next = r.NextToken;
      } while (next && list.length < 5000);
      all = list;
      error.textContent = "";
      render();
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        me = null;
        signInView();
        return;
      }
      error.textContent = describe(e);
    }
  };

  filter.addEventListener("input", render);
  const view = h(
    "section",
    { id: "instances-view", class: "view", "aria-labelledby": "instances-title" },
    h(
      "div",
      { class: "view-head" },
      h("h1", { id: "instances-title" }, "Managed instances"),
      h("label", { for: "instance-filter", class: "sr-only" }, "Filter instances"),
      filter,
      count,
      h("button", { type: "button", class: "ghost", onclick: () => void load() }, "Refresh"),
    ),
    error,
    h(
      "table",
      { class: "grid" },
      h("caption", { class: "sr-only" }, "Managed instances"),
      h(
        "thead",
        {},
        h("tr", {}, ...["Ping", "Name", "Instance", "Platform", "IP address", "Agent", "Actions"].map((c) => h("th", { scope: "col" }, c))),
      ),
      body,
    ),
  );
  content.prepend(view);
  void load();
  window.clearInterval(refresher);
  refresher = window.setInterval(() => {
    if (!view.hidden && document.visibilityState === "visible") void load();
  }, 10_000);
}

// --- for the browser tests: read what a terminal shows (the WebGL renderer leaves no text in the DOM)

(window as unknown as { airlockConsole: unknown }).airlockConsole = {
  terminalText(index: number): string {
    const t = tabs[index];
    if (!t) return "";
    const buf = t.term.buffer.active;
    const lines: string[] = [];
    for (let y = 0; y < buf.length; y++) lines.push(buf.getLine(y)?.translateToString(true) ?? "");
    return lines.join("\n");
  },
  /** Drops a terminal's socket as a network failure would (no TERMINATE): it must resume. */
  dropSocket(index: number): boolean {
    return tabs[index]?.dropSocket() ?? false;
  },
  terminalSize(index: number): [number, number] | null {
    const t = tabs[index];
    return t ? [t.term.cols, t.term.rows] : null;
  },
};

// --- start ---------------------------------------------------------------------------------------

window.addEventListener("resize", () => active?.refit());

async function boot(): Promise<void> {
  try {
    me = await whoami();
  } catch (e) {
    notice.textContent = describe(e);
  }
  if (me) shell();
  else signInView();
}

void boot();
