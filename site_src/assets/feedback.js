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

  // The receipt shown in place says what the service's receipt page says (form_handler/web/pages/receipt_content.html),
  // in the same words and order; the service sends the words that depend on the receipt (receipt_words in
  // form_handler/web/pages.py), and tests/test_pages.py pins the fixed sentences below to that template.
  var TOKEN_WARNING = "Keep this token now; it is shown only this once.";
  var TOKEN_WHY = "We store only a hash of it, so we cannot show it to you again. With the receipt above it lets you withdraw your consent at any time.";
  var KEEP_FILE = "Save this receipt as a file: it holds what you agreed to, which version of the policy, the token and how to use it. Keep the file private, since the token in it lets anyone withdraw or erase this consent.";
  var MANAGE_LATER = "Later, you can see this receipt again, withdraw your consents one at a time or all together, or erase your e-mail address and message on ";

  function hidden(name, value) { return el("input", null, { type: "hidden", name: name, value: value }); }

  function showReceipt(r, data) {
    receipt.textContent = "";
    receipt.appendChild(el("h2", "Your feedback was recorded"));
    receipt.appendChild(el("p", "Thank you. We recorded your feedback and your consent as set out below."));
    var facts = el("dl");
    function fact(term, node) {
      facts.appendChild(el("dt", term));
      facts.appendChild(el("dd")).appendChild(node);
    }
    fact("Receipt", el("code", r.receipt_id));
    var when = el("span");
    when.appendChild(el("time", r.recorded_at, { datetime: r.recorded_at }));
    when.appendChild(document.createTextNode(" (UTC)"));
    fact("Recorded at", when);
    var policy = el("span");
    policy.appendChild(el("a", r.policy_title, { href: r.version_url }));
    policy.appendChild(document.createTextNode(", the version you were shown" + (r.current ? "" : " (an earlier version)")));
    fact("Policy", policy);
    fact("Version", el("code", r.policy_version));
    fact("Email address", el("span", data.email ? data.email : "None given"));
    receipt.appendChild(facts);
    receipt.appendChild(el("h2", "Your choices"));
    var choices = receipt.appendChild(el("ul"));
    (r.consent_sentences || []).forEach(function (sentence) { choices.appendChild(el("li", sentence)); });
    var confirmation = confirmationSentence(r, data.email);
    if (confirmation) receipt.appendChild(el("p", confirmation));
    receipt.appendChild(el("h2", "Your message"));
    receipt.appendChild(el("blockquote", data.message, { "class": "message" }));

    receipt.appendChild(el("h2", "Withdrawal token"));
    var warning = receipt.appendChild(el("p", null, { "class": "warning" }));
    warning.appendChild(el("strong", TOKEN_WARNING));
    warning.appendChild(document.createTextNode(" " + TOKEN_WHY));
    receipt.appendChild(el("p")).appendChild(el("code", r.withdraw_token, { "class": "token" }));
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

    // The receipt file: a plain form post (the token goes in the body, never in a URL), answered as an attachment.
    receipt.appendChild(el("h2", "Keep your receipt"));
    receipt.appendChild(el("p", KEEP_FILE));
    var keep = el("form", null, { method: "post", action: r.receipt_file_url });
    keep.appendChild(hidden("receipt_id", r.receipt_id));
    keep.appendChild(hidden("withdraw_token", r.withdraw_token));
    keep.appendChild(el("button", "Download this receipt (JSON)", { type: "submit", "class": "md-button", "data-receipt-download": "" }));
    receipt.appendChild(keep);
    var later = receipt.appendChild(el("p", MANAGE_LATER));
    later.appendChild(el("a", "Manage your consent", { href: r.manage_url }));
    later.appendChild(document.createTextNode(", with the receipt id and the token."));

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
        if (res.status === 201) showReceipt(res.body, data);
        else if (res.status === 422 && res.body && res.body.errors) showErrors(res.body.errors);
        else showSummary(describe(res));
      })
      .catch(function () {
        showSummary("The feedback service could not be reached. Check your connection and try again.");
      })
      .then(function () { button.disabled = false; });
  });
})();
