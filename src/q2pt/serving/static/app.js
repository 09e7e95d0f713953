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

  var modelInfo = null;

  function post(url, body) {
    return fetchJSON(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  }

  // Why: each word's contribution to a type's score (POST /v1/explain), as shaded words.
  function explainType(query, locale, type) {
    return post("/v1/explain", { query: query, locale: locale, product_type: type }).then(function (ex) {
      var words = $("why-words");
      clear(words);
      var parts = ex.words.map(function (w) { return { text: w.word, c: w.contribution }; });
      if (ex.locale_token) parts.push({ text: "[locale " + ex.locale_token.token + "]", c: ex.locale_token.contribution, locale: true });
      var scale = Math.max.apply(null, parts.map(function (p) { return Math.abs(p.c); }).concat([1e-9]));
      parts.forEach(function (p) {
        var span = el("span", "word" + (p.locale ? " locale-token" : "") + (p.c >= 0 ? " up" : " down"), p.text);
        span.setAttribute("data-contribution", p.c.toFixed(4));
        span.title = (p.c >= 0 ? "+" : "") + p.c.toFixed(3) + " to the score of " + ex.product_type;
        var alpha = (0.12 + 0.7 * Math.abs(p.c) / scale).toFixed(2);
        span.style.backgroundColor = p.c >= 0 ? "rgba(18, 122, 58, " + alpha + ")" : "rgba(180, 35, 24, " + alpha + ")";
        words.appendChild(span);
        words.appendChild(document.createTextNode(" "));
      });
      $("why-type").textContent = ex.product_type + " (score " + ex.score.toFixed(3) + ")";
      $("why-note").textContent = "Shading: each word's contribution to the score of " + ex.product_type
        + " (the score minus the score without that word); green raises it, red lowers it.";
      $("why").hidden = false;
    }).catch(function (err) {
      $("why").hidden = false;
      $("why-type").textContent = type;
      clear($("why-words"));
      $("why-note").textContent = "No explanation: " + err.message;
    });
  }

  // The same query in every locale of the model (POST /v1/predict/batch), side by side.
  function acrossLocales(query, pred) {
    var locales = (modelInfo && modelInfo.locales) || [];
    var limit = (modelInfo && modelInfo.limits && modelInfo.limits.max_batch) || 64;
    locales = locales.slice(0, limit);
    if (locales.length < 2) { $("across").hidden = true; return Promise.resolve(); }
    var mine = {};
    pred.predicted.forEach(function (t) { mine[t] = true; });
    return post("/v1/predict/batch", {
      queries: locales.map(function (loc) { return { query: query, locale: loc }; }), top_k: 3
    }).then(function (batch) {
      var body = $("across-table").tBodies[0];
      clear(body);
      batch.results.forEach(function (r) {
        var tr = el("tr", r.locale === pred.locale ? "current" : null);
        tr.setAttribute("data-locale", r.locale);
        tr.appendChild(el("td", null, r.locale));
        var predicted = el("td");
        r.predicted.forEach(function (t) {
          predicted.appendChild(el("span", "chip" + (mine[t] ? "" : " differs"), t));
          predicted.appendChild(document.createTextNode(" "));
        });
        if (!r.predicted.length) predicted.appendChild(el("span", "muted", "none"));
        tr.appendChild(predicted);
        tr.appendChild(el("td", "muted", r.product_types.map(function (pt) {
          return pt.product_type + " " + pt.score.toFixed(2);
        }).join(", ")));
        body.appendChild(tr);
      });
      $("across").hidden = false;
    }).catch(function (err) {
      $("across").hidden = true;
      $("status").textContent += " (other locales: " + err.message + ")";
    });
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
      li.addEventListener("click", function () { explainType(pred.query.trim(), pred.locale, pt.product_type); });
      results.appendChild(li);
    });
    // a hierarchical model: each answer with its path (ancestors, their scores) and level
    var paths = $("paths");
    clear(paths);
    (pred.paths || []).forEach(function (p) {
      var li = el("li", "path");
      li.setAttribute("data-level", String(p.level));
      p.ancestors.forEach(function (a) {
        li.appendChild(el("span", "ancestor", a.product_type.split(/\s*>\s*/).pop() + " (" + a.score.toFixed(2) + ")"));
        li.appendChild(el("span", "sep", " \u203a "));
      });
      li.appendChild(el("strong", "leaf", p.product_type.split(/\s*>\s*/).pop() + " (" + p.score.toFixed(2) + ")"));
      li.appendChild(el("span", "muted level", " level " + p.level));
      paths.appendChild(li);
    });
    paths.hidden = !(pred.paths && pred.paths.length);
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
    return post("/v1/predict", body).then(function (pred) {
      render(pred);
      $("status").textContent = "answered in " + Math.round(performance.now() - started) + " ms";
      var top = pred.product_types.length ? pred.product_types[0].product_type : null;
      return Promise.all([top ? explainType(query, pred.locale, top) : null, acrossLocales(query, pred)]);
    }).then(function () {
      if (document.body.getAttribute("data-state") === "loading") setState("done");
    }).catch(function (err) {
      $("status").textContent = "";
      showError(err.message);
    }).then(function () { $("submit").disabled = false; });
  }

  form.addEventListener("submit", function (ev) { ev.preventDefault(); predict(); });

  setState("loading-model");
  fetchJSON("/v1/model").then(function (info) {
    modelInfo = info;
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
