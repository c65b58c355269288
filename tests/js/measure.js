// Runs inside headless Chromium: renders each card with the official Adaptive Cards renderer and a Teams
// host config at a fixed width, then measures what a person would see. Globals set by the page:
// CARDS (array of card JSON), HOST (host config JSON), WIDTH (px). Writes a JSON report into #report:
// one entry per card and state ("collapsed" as posted, "expanded" after every toggle is clicked; "toggles"
// counts them), with
//  - firstText: the text of the first text element in the card body;
//  - buttons: every visible button with its text and whether it is fully visible (inside the card, not clipped);
//  - lowContrast: visible texts whose WCAG contrast with their background is under 4.5:1 (and the ratio);
//  - minContrast: the lowest ratio seen;
//  - overflow: visible elements whose content is wider than their box or that stick out of the card.
"use strict";
(function () {
  function parse(color) {
    const m = color.match(/rgba?\(([^)]+)\)/);
    if (!m) return null;
    const p = m[1].split(",").map((x) => parseFloat(x));
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  }
  function over(top, bottom) {
    const a = top.a;
    return { r: top.r * a + bottom.r * (1 - a), g: top.g * a + bottom.g * (1 - a), b: top.b * a + bottom.b * (1 - a), a: 1 };
  }
  function luminance(c) {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  }
  function ratio(a, b) {
    const la = luminance(a), lb = luminance(b);
    return (Math.max(la, lb) + 0.05) / (Math.min(la, lb) + 0.05);
  }
  function background(el) {
    // Composite every background from the page up to the element, innermost last.
    const chain = [];
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) chain.push(node);
    let color = { r: 255, g: 255, b: 255, a: 1 };
    for (let i = chain.length - 1; i >= 0; i--) {
      const c = parse(getComputedStyle(chain[i]).backgroundColor);
      if (c && c.a > 0) color = over(c, color);
    }
    return color;
  }
  function visible(el) {
    const style = getComputedStyle(el);
    if (style.display === "none" || style.visibility === "hidden") return false;
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  }
  function ownText(el) {
    let text = "";
    for (const n of el.childNodes) if (n.nodeType === 3) text += n.textContent;
    return text.trim();
  }
  function label(el) {
    return (el.className || el.tagName) + ": " + (el.textContent || "").trim().slice(0, 60);
  }
  function measure(frame) {
    const box = frame.getBoundingClientRect();
    const all = Array.from(frame.querySelectorAll("*")).filter(visible);
    const texts = all.filter((el) => ownText(el) !== "");
    const first = frame.querySelector(".ac-textBlock, .ac-richTextBlock");
    const buttons = all.filter((el) => el.tagName === "BUTTON").map((b) => {
      const r = b.getBoundingClientRect();
      const clipped = [b, ...b.querySelectorAll("*")].some((e) => e.scrollWidth > e.clientWidth + 1);
      const inside = r.left >= box.left - 0.5 && r.right <= box.right + 0.5;
      return { text: b.textContent.trim(), fully_visible: inside && !clipped, width: Math.round(r.width) };
    });
    let minContrast = 99;
    const lowContrast = [];
    for (const el of texts) {
      const fg = parse(getComputedStyle(el).color);
      if (!fg) continue;
      const bg = background(el);
      const value = ratio(over(fg, bg), bg);
      minContrast = Math.min(minContrast, value);
      if (value < 4.5) lowContrast.push({ text: ownText(el).slice(0, 60), ratio: Math.round(value * 100) / 100 });
    }
    const overflow = [];
    for (const el of all) {
      const r = el.getBoundingClientRect();
      const style = getComputedStyle(el);
      const sticksOut = r.right > box.right + 1 || r.left < box.left - 1;
      const clipped = style.overflowX !== "visible" && el.scrollWidth > el.clientWidth + 1 && ownText(el) !== "";
      if (sticksOut || clipped) overflow.push(label(el));
    }
    return { firstText: first ? first.textContent.trim() : "", buttons, lowContrast,
             minContrast: Math.round(minContrast * 100) / 100, overflow };
  }
  const host = new AdaptiveCards.HostConfig(HOST);
  const frames = CARDS.map(function (json, index) {
    const frame = document.createElement("div");
    frame.className = "frame";
    frame.id = "card-" + index;
    frame.style.width = WIDTH + "px";
    document.getElementById("cards").appendChild(frame);
    const card = new AdaptiveCards.AdaptiveCard();
    card.hostConfig = host;
    card.parse(json, new AdaptiveCards.SerializationContext());
    frame.appendChild(card.render());
    return frame;
  });
  const report = frames.map(function (frame) {
    const collapsed = measure(frame);
    const toggles = Array.from(frame.querySelectorAll("button[aria-controls]"));
    for (const b of toggles) b.click();
    const expanded = measure(frame);
    return { collapsed, expanded, toggles: toggles.length };
  });
  // Screenshots show the cards as posted (collapse the toggles again), or expanded with #expanded.
  for (const frame of location.hash === "#expanded" ? [] : frames) {
    for (const b of Array.from(frame.querySelectorAll("button[aria-controls]"))) b.click();
  }
  document.getElementById("report").textContent = JSON.stringify(report);
  document.body.setAttribute("data-measured", String(report.length));
})();
