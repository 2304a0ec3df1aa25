// The session token and the JSON API.
//
// The launcher prints the dashboard's address with ?token=...; the page keeps the token in
// sessionStorage (this tab only), removes it from the address bar, and sends it in the
// X-Orchestrate-Token header on every call. The server trusts nothing a browser attaches by
// itself (no cookie), so another page cannot act through this one's browser.
import { showBanner } from "./dom.js";

const KEY = "orchestrate_token";

function takeToken() {
  const url = new URL(location.href);
  let value = url.searchParams.get("token") || "";
  try {
    if (value) sessionStorage.setItem(KEY, value);
    else value = sessionStorage.getItem(KEY) || "";
  } catch (e) { /* storage disabled: the token lives as long as this page */ }
  if (url.searchParams.has("token")) {
    url.searchParams.delete("token");
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  }
  return value;
}

export const token = takeToken();

export function noTokenBanner() {
  showBanner("auth", "This page has no valid token. Open the address the launcher printed (it ends with ?token=…).");
}

export async function api(method, path, body) {
  const headers = { "Accept": "application/json", "X-Orchestrate-Token": token };
  const unsafe = method !== "GET";
  if (unsafe) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, credentials: "omit", cache: "no-store",
    body: unsafe ? JSON.stringify(body === undefined ? {} : body) : undefined,
  });
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    if (response.status === 401) noTokenBanner();
    throw new Error((data && data.error) || response.status + " " + response.statusText);
  }
  return data;
}
