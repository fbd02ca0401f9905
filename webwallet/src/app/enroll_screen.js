// Enrollment: one sign-in enrolls every live code version and sets the PIN; after a storage
// loss the same step revokes the devices this browser lost.
import { pinProblem } from '../core/index.js';
import { $, describe, element, notice, setMessage } from './dom.js';
import { t } from './i18n.js';

export class EnrollScreen {
  constructor(wallet, { onEnrolled }) {
    this.wallet = wallet;
    this.onEnrolled = onEnrolled;
    $('enroll-form').addEventListener('submit', (event) => { event.preventDefault(); this.submit(); });
  }

  enter() {
    const lost = this.wallet.lost;
    const wholeLoss = lost.length > 0 && this.wallet.devices.length === 0;
    const text = !lost.length ? '' : wholeLoss ? t('lost_all') : t('lost_part', { versions: lost.map((device) => device.version).join(', ') });
    setMessage('enroll-lost', text);
    if (this.wallet.meta?.user) $('enroll-user').value = this.wallet.meta.user;
    setMessage('enroll-error', '');
  }

  async submit() {
    const user = $('enroll-user').value.trim();
    const password = $('enroll-password').value;
    const pin = $('enroll-pin').value.trim();
    const weak = pin ? pinProblem(pin) : null;
    if (weak) { setMessage('enroll-error', t(weak === 'format' ? 'pin_bad' : 'pin_weak')); return; }
    const button = $('enroll-submit');
    button.disabled = true;
    button.textContent = t('enrolling');
    setMessage('enroll-error', '');
    try {
      const { revoked } = await this.wallet.enroll(user, password, { pin });
      $('enroll-password').value = '';
      $('enroll-pin').value = '';
      notice(revoked.length ? `${t('enrolled')} ${t('revoked_n', { n: revoked.length })}` : t('enrolled'));
      await this.onEnrolled();
      await this.offerRevokingOthers();
    } catch (error) {
      setMessage('enroll-error', describe(error));
    } finally {
      button.disabled = false;
      button.textContent = t('enroll_button');
    }
  }

  /** A browser that lost everything cannot know its old devices: the server's list can. */
  async offerRevokingOthers() {
    let others;
    try {
      others = await this.wallet.otherWebDevices();
    } catch {
      return;
    }
    if (!others.length) return;
    const box = $('notice');
    const labels = others.map((item) => `${item.label} (${item.version}, ${item.created_at.slice(0, 10)})`).join('; ');
    const button = element('button', { text: t('revoke_them'), attrs: { type: 'button', id: 'revoke-others' } });
    button.addEventListener('click', async () => {
      button.disabled = true;
      try {
        await this.wallet.revoke(others.map((item) => item.device_id));
        notice(t('revoked_n', { n: others.length }));
      } catch (error) {
        notice(describe(error));
      }
    });
    box.replaceChildren(element('p', { text: t('other_web_devices', { labels }) }), button);
    box.hidden = false;
  }
}
