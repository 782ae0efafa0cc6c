/*
 * The feedback form, progressively enhanced. Without this script the form posts as plain HTML and the service
 * answers with a receipt page. With it, the form is sent with fetch as JSON and the receipt is shown in place;
 * a refusal (422) puts each message next to its field and moves focus to the error summary.
 * Server data is only ever written with textContent, never as HTML.
 */
(function () {
  "use strict";

  var form = document.querySelector("[data-feedback-form]");
  if (!form || !window.fetch || !window.JSON) return;

  var summary = document.getElementById("feedback-summary");
  var receipt = document.getElementById("feedback-receipt");
  var CONSENTS = ["consent_contact", "consent_updates", "consent_third_parties"];
  var TEXT_FIELDS = ["message", "email", "policy_id", "policy_version", "page", "website"];
  var STATUS_TEXT = {
    400: "Your feedback could not be accepted.",
    403: "This form may only be sent from this site.",
    413: "Your feedback is too long to send.",
    415: "Your browser sent the form in a way the service does not accept.",
    429: "Too many messages were sent from your connection. Please wait a minute and try again.",
    503: "Your feedback could not be recorded just now. Nothing was stored; please try again later."
  };

  // The receipt's word on the confirmation mail: the same strings as the service's receipt page
  // (CONFIRMATION_SENTENCE and CONFIRMATION_WAITS in form_handler/pages.py), word for word.
  var CONFIRMATION_SENTENCE = "We are sending a confirmation e-mail to the address you gave. Only after you follow the link in it do we {waits}. To spare the owner of an address unwanted mail, we send only a few such e-mails to one address a day.";
  var CONFIRMATION_WAITS = {
    "updates": "e-mail you about changes to our policies",
    "third_parties": "share your address with third parties",
    "both": "e-mail you about changes to our policies and share your address with third parties"
  };

  // The service checks everything; the browser's own bubbles would bypass our error summary.
  form.noValidate = true;

  function el(tag, text, attrs) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    Object.keys(attrs || {}).forEach(function (name) { node.setAttribute(name, attrs[name]); });
    return node;
  }

  function labelOf(name) {
    var label = form.querySelector('label[for="' + name + '"]');
    return label ? label.textContent.trim() : name;
  }

  function clearErrors() {
    summary.textContent = "";
    form.querySelectorAll(".feedback-form__error").forEach(function (slot) { slot.textContent = ""; });
    form.querySelectorAll("[aria-invalid]").forEach(function (field) { field.removeAttribute("aria-invalid"); });
  }

  function showErrors(errors) {
    var list = el("ul");
    Object.keys(errors).forEach(function (name) {
      var slot = document.getElementById(name + "-error");
      var field = form.elements.namedItem(name);
      var item = el("li");
      // Errors about hidden fields (an outdated policy version, say) have no visible field: summary only.
      if (slot && field && field.type !== "hidden") {
        slot.textContent = errors[name];
        field.setAttribute("aria-invalid", "true");
        item.appendChild(el("a", labelOf(name) + ": " + errors[name], { href: "#" + name }));
      } else {
        item.textContent = errors[name];
      }
      list.appendChild(item);
    });
    showSummary(list);
  }

  function showSummary(content) {
    summary.textContent = "";
    summary.appendChild(el("p", "Your feedback was not sent. Please correct the following:"));
    summary.appendChild(typeof content === "string" ? el("p", content) : content);
    summary.focus();
  }

  function payload() {
    var data = {};
    TEXT_FIELDS.forEach(function (name) {
      var field = form.elements.namedItem(name);
      if (field) data[name] = field.value;
    });
    if (!data.email) delete data.email;
    CONSENTS.forEach(function (name) { data[name] = form.elements.namedItem(name).checked; });
    return data;
  }

  function post(url, data) {
    return fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify(data),
      credentials: "same-origin"
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        return { status: response.status, body: body };
      });
    });
  }

  function readable(iso) {
    return String(iso).replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC");
  }

  function confirmationSentence(r, email) {
    var which = r.consent_updates ? (r.consent_third_parties ? "both" : "updates")
      : (r.consent_third_parties ? "third_parties" : "");
    return email && email.trim() && which ? CONFIRMATION_SENTENCE.replace("{waits}", CONFIRMATION_WAITS[which]) : "";
  }

  function showReceipt(r, email) {
    receipt.textContent = "";
    receipt.appendChild(el("h2", "Thank you: your feedback is recorded"));
    var facts = el("dl");
    function fact(term, value, asCode) {
      facts.appendChild(el("dt", term));
      var dd = el("dd");
      dd.appendChild(asCode ? el("code", value) : el("span", value));
      facts.appendChild(dd);
    }
    fact("Receipt", r.receipt_id, true);
    var when = el("time", readable(r.recorded_at), { datetime: r.recorded_at });
    facts.appendChild(el("dt", "Recorded at"));
    facts.appendChild(el("dd")).appendChild(when);
    fact("Policy", r.policy_id);
    fact("Policy version", r.policy_version, true);
    CONSENTS.forEach(function (name) { fact(labelOf(name), r[name] ? "Yes" : "No"); });
    fact("Withdraw token", r.withdraw_token, true);
    receipt.appendChild(facts);
    var confirmation = confirmationSentence(r, email);
    if (confirmation) receipt.appendChild(el("p", confirmation));
    receipt.appendChild(el("p", "Keep the receipt and the token: the token is shown only this once, " +
      "and with it you can withdraw your consent at any time."));

    var button = el("button", "Withdraw my consent", { type: "button", "class": "md-button" });
    var status = el("p", null, { role: "status", "aria-live": "polite" });
    button.addEventListener("click", function () {
      button.disabled = true;
      post(form.getAttribute("data-withdraw-action"), { receipt_id: r.receipt_id, withdraw_token: r.withdraw_token })
        .then(function (res) {
          if (res.status === 200) {
            status.textContent = "Your consent is withdrawn (" + readable(res.body.withdrawn_at) + ").";
          } else {
            button.disabled = false;
            status.textContent = "Your consent could not be withdrawn (" + describe(res) + ")";
          }
        })
        .catch(function () {
          button.disabled = false;
          status.textContent = "Your consent could not be withdrawn: the service could not be reached.";
        });
    });
    receipt.appendChild(button);
    receipt.appendChild(status);

    form.hidden = true;
    receipt.hidden = false;
    receipt.focus();
  }

  function describe(res) {
    var errors = res.body && res.body.errors;
    if (errors) return Object.keys(errors).map(function (k) { return errors[k]; }).join(" ");
    return (res.body && (res.body.detail || res.body.error)) || STATUS_TEXT[res.status] ||
      "The service answered with status " + res.status + ".";
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    clearErrors();
    var button = form.querySelector('[type="submit"]');
    button.disabled = true;
    var data = payload();
    post(form.action, data)
      .then(function (res) {
        if (res.status === 201) showReceipt(res.body, data.email);
        else if (res.status === 422 && res.body && res.body.errors) showErrors(res.body.errors);
        else showSummary(describe(res));
      })
      .catch(function () {
        showSummary("The feedback service could not be reached. Check your connection and try again.");
      })
      .then(function () { button.disabled = false; });
  });
})();
