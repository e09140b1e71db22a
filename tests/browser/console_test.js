// console_test.js: the console in a real headless Chromium on a phone-sized
// screen: log in; in the cleaner relabel one image by click, one by
// keyboard, delete one; reload and find the three kept; undo one; open the
// dataset, job and model pages; retrain and watch it finish. Hostile labels
// and URLs must show as text. Prints one JSON object for the shell test.
//   node console_test.js CONSOLE_URL TOKEN DATASET HOSTILE_LABEL
const puppeteer = require('puppeteer-core');

const [base, token, ds, hostile] = process.argv.slice(2);

const cardSel = (i, rest = '') => `.card[data-index="${i}"]${rest ? ' ' + rest : ''}`;

async function cards(page) {
  await page.waitForSelector('.card', {timeout: 20000});
  return page.$$eval('.card', cs => cs.map(c => ({
    image: c.dataset.image,
    given: c.querySelector('.given').textContent,
    decision: c.querySelector('.decision').textContent,
  })));
}

async function decisionOf(page, image) {
  return page.$eval(`.card[data-image="${image}"] .decision`, e => e.textContent);
}

async function waitDecision(page, image, want) {
  await page.waitForFunction((img, w) => {
    const e = document.querySelector(`.card[data-image="${img}"] .decision`);
    return e && e.textContent === w;
  }, {timeout: 15000}, image, want);
}

let step = 'start', lastPage = null;
const overflow = (page) => page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);

(async () => {
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  const out = {errors: [], overflow: {}};
  try {
    const page = await browser.newPage();
    lastPage = page;
    page.on('pageerror', e => out.errors.push(String(e)));
    page.on('console', m => {
      if (/Content Security Policy/i.test(m.text())) out.errors.push('CSP: ' + m.text());
    });
    page.on('dialog', async d => { out.errors.push('dialog: ' + d.message()); await d.dismiss(); });
    await page.setViewport({width: 390, height: 844, isMobile: true, hasTouch: true});
    const t0 = Date.now();
    step = 'login';
    await page.goto(base + '#/datasets', {waitUntil: 'load'});
    await page.waitForSelector('#token', {timeout: 10000});
    out.loginLabel = await page.$eval('label[for="token"]', e => e.textContent);
    await page.type('#token', 'not-the-token');
    await page.click('#login button');
    await page.waitForFunction(() => document.getElementById('loginerr').textContent.length > 0);
    out.wrongLogin = await page.$eval('#loginerr', e => e.textContent);
    await page.$eval('#token', e => { e.value = ''; });
    await page.type('#token', token);
    await page.click('#login button');
    await page.waitForSelector('main table', {timeout: 10000});
    out.datasetsText = await page.$eval('main', e => e.textContent);
    out.overflow.datasets = await overflow(page);

    // the cleaner: label issues
    step = 'cleaner';
    await page.goto(base + '#/clean/' + encodeURIComponent(ds) + '?kind=label', {waitUntil: 'load'});
    let cs = await cards(page);
    out.cardsShown = cs.length;
    out.pageinfo = await page.$eval('#pageinfo', e => e.textContent);
    out.overflow.cleaner = await overflow(page);
    // an unreliable audit says so above its suggestions (the test marks it so)
    out.unreliable = await page.$eval('#unreliable', e => e.textContent).catch(() => null);
    const [a, b, c] = cs;
    // 1. relabel by click: a class that is not its label
    const classes = await page.$$eval(cardSel(0, 'select.relabel option'), os => os.map(o => o.value).filter(Boolean));
    const to = classes.find(x => x !== a.given);
    await page.select(cardSel(0, 'select.relabel'), to);
    await waitDecision(page, a.image, 'relabel');
    // 2. relabel by keyboard: accept its suggestion
    step = 'keyboard';
    await page.focus(`.card[data-image="${b.image}"]`);
    await page.keyboard.press('a');
    await waitDecision(page, b.image, 'relabel');
    const bTo = await page.$eval(`.card[data-image="${b.image}"] .suggested`, e => e.textContent);
    // 3. delete by click
    step = 'delete';
    await page.click(`.card[data-image="${c.image}"] button.delete`);
    await waitDecision(page, c.image, 'delete');
    out.clicked = {a: a.image, aTo: to, b: b.image, bTo, c: c.image};
    // reload: the decisions come from the server
    step = 'reload';
    await page.reload({waitUntil: 'load'});
    await cards(page);
    out.afterReload = {a: await decisionOf(page, a.image), b: await decisionOf(page, b.image),
                       c: await decisionOf(page, c.image)};
    out.aGivenAfter = await page.$eval(`.card[data-image="${a.image}"] .given`, e => e.textContent);
    // undo the last (the delete), across the reload
    step = 'undo';
    await page.click('#undo');
    await waitDecision(page, c.image, '');
    out.afterUndo = await decisionOf(page, c.image);

    // the hostile label, in the cleaner's class filter and cards, as text
    out.hostileOption = await page.$$eval('#label option', (os, h) => os.some(o => o.textContent === h), hostile);

    // dataset, jobs, model pages
    step = 'pages';
    await page.goto(base + '#/dataset/' + encodeURIComponent(ds), {waitUntil: 'load'});
    await page.waitForSelector('main table', {timeout: 10000});
    out.datasetHasHostile = await page.$$eval('main td', (ts, h) => ts.some(t => t.textContent === h), hostile);
    out.failures = await page.$$eval('#failures tbody tr', rs => rs.map(r => [...r.children].map(c => c.textContent)));
    out.overflow.dataset = await overflow(page);
    await page.goto(base + '#/models', {waitUntil: 'load'});
    await page.waitForSelector('main table a', {timeout: 10000});
    await page.click('main table a');
    await page.waitForSelector('#cm', {timeout: 10000});
    out.cmCells = await page.$$eval('#cm td', ts => ts.length);
    out.overflow.model = await overflow(page);
    await page.goto(base + '#/jobs', {waitUntil: 'load'});
    await page.waitForSelector('main table a', {timeout: 10000});
    const jobLinks = await page.$$eval('main table tr', rs => rs.slice(1).map(r => ({
      href: r.querySelector('a').getAttribute('href'), kind: r.children[1].textContent})));
    const train = jobLinks.find(j => j.kind === 'train');
    await page.goto(base + train.href, {waitUntil: 'load'});
    await page.waitForSelector('#losscurve svg path', {timeout: 10000});
    out.lossPaths = await page.$$eval('#losscurve svg path', ps => ps.length);
    out.jobText = await page.$eval('main', e => e.textContent);
    out.overflow.job = await overflow(page);

    // retrain with the cleaned data and watch it end
    step = 'retrain';
    await page.goto(base + '#/clean/' + encodeURIComponent(ds), {waitUntil: 'load'});
    await cards(page);
    await page.click('#retrain');
    await page.waitForSelector('#beforeafter', {timeout: 15000});
    await page.waitForFunction(() => /after: [0-9]/.test(document.getElementById('beforeafter').textContent),
                               {timeout: 240000, polling: 500});
    out.beforeAfter = await page.$eval('#beforeafter', e => e.textContent);
    out.retrainJob = page.url().split('#/retrain/')[1].split('?')[0];
    out.xss = await page.evaluate(() => window.__xss === 1 || !!document.querySelector('img[src="x"]'));
    out.seconds = (Date.now() - t0) / 1000;
  } catch (e) {
    let extra = '';
    try {
      extra = await lastPage.evaluate(() => 'toast: ' + document.getElementById('toast').textContent +
        '; undo: ' + localStorage.getItem('ursa-undo') + '; hash: ' + location.hash);
    } catch (x) { /* the page is gone */ }
    throw new Error(String(e && e.message || e) + ' (' + extra + ')');
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(out));
})().catch(e => { console.error('at step ' + step + ': ' + String(e && e.stack || e)); process.exit(1); });
