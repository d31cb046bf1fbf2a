// The console API: sign-in, who-am-I, sign-out, and API calls as the signed-in user.
// The CSRF token lives only in this module's memory (never in the DOM or storage).

/** What the broker says about the signed-in session. */
export interface Me {
  userName: string;
  arn: string;
  csrfToken: string;
  mfaAuthenticated: boolean;
  passwordResetRequired: boolean;
  expiresAt: number;
}

/** An API error in the broker's shape (`__type`, `message`) with its HTTP status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

let csrf = "";

/** The session's CSRF token (the terminal sends it as its first WebSocket message). */
export function csrfToken(): string {
  return csrf;
}

async function request(path: string, init: RequestInit): Promise<unknown> {
  const resp = await fetch(path, { credentials: "same-origin", cache: "no-store", ...init });
  const text = await resp.text();
  let body: unknown = {};
  try {
    body = text ? JSON.parse(text) : {};
  } catch {
    body = { message: text };
  }
  if (!resp.ok) {
    const b = body as { __type?: string; message?: string };
    const code = (b.__type ?? `HTTP${resp.status}`).split("#").pop() ?? "Error";
    throw new ApiError(resp.status, code, b.message ?? resp.statusText);
  }
  return body;
}

function post(path: string, body: unknown): Promise<unknown> {
  return request(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body),
  });
}

/** Signs in; the broker sets the HttpOnly cookie and answers the CSRF token. */
export async function signIn(userName: string, password: string, mfaCode?: string): Promise<Me> {
  const form: Record<string, string> = { userName, password };
  if (mfaCode) form.mfaCode = mfaCode;
  const me = (await post("/console/api/signin", form)) as Me;
  csrf = me.csrfToken;
  return me;
}

/** The current session, or null when signed out. */
export async function whoami(): Promise<Me | null> {
  try {
    const me = (await request("/console/api/whoami", { method: "GET" })) as Me;
    csrf = me.csrfToken;
    return me;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return null;
    throw e;
  }
}

/** Ends the session. */
export async function signOut(): Promise<void> {
  await post("/console/api/signout", {});
  csrf = "";
}

/** One API operation (`DescribeInstanceInformation`, `StartSession`, …) as the user. */
export async function call<T = Record<string, unknown>>(operation: string, body: unknown = {}): Promise<T> {
  return (await post("/console/api/call", { operation, body })) as T;
}
