// page_test.js: the inference web page in a real headless Chromium, on a
// phone-sized screen: pick a file, see the bars; paste a URL, see the bars;
// a URL that is not an image shows its error. Prints one JSON object for
// the shell test to check against the HTTP API.
//   node page_test.js PAGE_URL IMAGE_FILE IMAGE_URL BAD_URL
const puppeteer = require('puppeteer-core');

const [pageUrl, imageFile, imageUrl, badUrl] = process.argv.slice(2);

async function bars(page) {
  await page.waitForSelector('#results .row', {timeout: 15000});
  return page.$$eval('#results .row', rs => rs.map(r => ({
    label: r.querySelector('.label').textContent,
    pct: r.querySelector('.pct').textContent,
    width: r.querySelector('.fill').style.width,
  })));
}

(async () => {
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  const out = {errors: []};
  try {
    const page = await browser.newPage();
    page.on('pageerror', e => out.errors.push(String(e)));
    // the server's Content-Security-Policy must let the page do all it does
    page.on('console', m => {
      if (/Content Security Policy/i.test(m.text())) out.errors.push('CSP: ' + m.text());
    });
    await page.setViewport({width: 390, height: 844, isMobile: true, hasTouch: true});
    await page.goto(pageUrl, {waitUntil: 'load'});
    out.title = await page.title();
    const input = await page.$('#file');
    await input.uploadFile(imageFile);
    out.fileBars = await bars(page);
    out.model = await page.$eval('#model', e => e.textContent);
    out.previewShown = await page.$eval('#preview', e => e.style.display === 'block');
    out.overflowX = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
    await page.$eval('#results', e => { e.innerHTML = ''; });
    await page.type('#url', imageUrl);
    await page.click('#urlform button');
    out.urlBars = await bars(page);
    await page.$eval('#url', e => { e.value = ''; });
    await page.type('#url', badUrl);
    await page.click('#urlform button');
    await page.waitForFunction(() => document.getElementById('error').textContent.length > 0,
                               {timeout: 15000});
    out.badError = await page.$eval('#error', e => e.textContent);
    out.barsAfterError = await page.$$eval('#results .row', rs => rs.length);
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(out));
})().catch(e => { console.error(String(e)); process.exit(1); });
