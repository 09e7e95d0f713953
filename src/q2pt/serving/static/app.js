// q2pt demo page: no dependencies. Reads ?query=...&locale=...&top_k=... from the URL,
// predicts on load when a query is given, and keeps the URL in sync with the form.
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var form = $("form"), queryEl = $("query"), localeEl = $("locale"), topkEl = $("top_k");
  var params = new URLSearchParams(window.location.search);

  function setState(state) { document.body.setAttribute("data-state", state); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;   // textContent only: no HTML injection
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function showError(message) {
    $("error").textContent = message;
    $("error").hidden = false;
    $("output").hidden = true;
    setState("error");
  }
  function problemMessage(body, status) {
    if (body && body.detail) return body.title ? body.title + ": " + body.detail : body.detail;
    return "request failed (HTTP " + status + ")";
  }

  function fetchJSON(url, options) {
    return fetch(url, options).then(function (resp) {
      return resp.json().catch(function () { return null; }).then(function (body) {
        if (!resp.ok) throw new Error(problemMessage(body, resp.status));
        return body;
      });
    });
  }

  function addLocale(code, label) {
    var opt = el("option", null, label || code);
    opt.value = code;
    localeEl.appendChild(opt);
  }

  function render(pred) {
    var results = $("results");
    clear(results);
    clear($("warnings"));
    (pred.warnings || []).forEach(function (w) { $("warnings").appendChild(el("li", null, w)); });
    var t = pred.threshold;
    pred.product_types.forEach(function (pt) {
      var li = el("li", "result" + (pt.predicted ? " predicted" : ""));
      li.setAttribute("data-type", pt.product_type);
      li.setAttribute("data-predicted", pt.predicted ? "true" : "false");
      var name = el("span", "type", pt.product_type);
      if (pt.predicted) name.appendChild(el("span", "badge", "predicted"));
      var bar = el("div", "bar");
      var fill = el("div", "fill");
      fill.style.width = (Math.max(0, Math.min(1, pt.score)) * 100).toFixed(1) + "%";
      var tick = el("div", "tick");
      tick.style.left = (Math.max(0, Math.min(1, t)) * 100).toFixed(1) + "%";
      tick.title = "threshold " + t.toFixed(3);
      bar.appendChild(fill);
      bar.appendChild(tick);
      li.appendChild(name);
      li.appendChild(bar);
      li.appendChild(el("span", "score", pt.score.toFixed(3)));
      results.appendChild(li);
    });
    var n = pred.predicted.length;
    var source = pred.threshold_source === "request" ? "set in the request"
      : pred.threshold_source === "locale" ? "calibrated for " + pred.locale_used : "global calibrated threshold";
    $("summary").textContent = (n ? "Predicted: " + pred.predicted.join(", ") : "No product type reaches the threshold")
      + " \u2014 threshold " + t.toFixed(3) + " (" + source + ")"
      + (pred.locale_used ? "" : "; predicted locale-agnostically");
    $("output").hidden = false;
    $("error").hidden = true;
  }

  function predict() {
    var query = queryEl.value.trim();
    if (!query) { showError("Type a query first."); return; }
    var body = { query: query, locale: localeEl.value };
    var k = parseInt(topkEl.value, 10);
    if (k > 0) body.top_k = k;
    var url = new URLSearchParams({ query: query, locale: localeEl.value });
    if (k > 0) url.set("top_k", String(k));
    window.history.replaceState(null, "", "?" + url.toString());
    setState("loading");
    $("submit").disabled = true;
    $("status").textContent = "predicting\u2026";
    var started = performance.now();
    return fetchJSON("/v1/predict", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body)
    }).then(function (pred) {
      render(pred);
      $("status").textContent = "answered in " + Math.round(performance.now() - started) + " ms";
      setState("done");
    }).catch(function (err) {
      $("status").textContent = "";
      showError(err.message);
    }).then(function () { $("submit").disabled = false; });
  }

  form.addEventListener("submit", function (ev) { ev.preventDefault(); predict(); });

  setState("loading-model");
  fetchJSON("/v1/model").then(function (info) {
    clear(localeEl);
    info.locales.forEach(function (loc) { addLocale(loc); });
    var wanted = params.get("locale");
    if (wanted && info.locales.indexOf(wanted) < 0) addLocale(wanted, wanted + " (not in the model)");
    if (wanted) localeEl.value = wanted;
    $("model-info").textContent = info.variant + " model, " + info.encoder + " encoder, "
      + info.n_product_types + " product types, " + info.locales.length + " locales, "
      + info.runtime + " runtime" + (info.data && info.data.simulated ? " \u2014 trained on SIMULATED data" : "");
    if (params.get("top_k")) topkEl.value = params.get("top_k");
    if (params.get("query")) {
      queryEl.value = params.get("query");
      return predict();
    }
    setState("ready");
  }).catch(function (err) { showError("Cannot load the model summary: " + err.message); });
})();
