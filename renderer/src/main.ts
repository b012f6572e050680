import { createPinia } from 'pinia'
import { createApp } from 'vue'
import App from './App.vue'
import { repairAriaGaps } from './lib/aria-repairs'
import { router } from './router'
import './styles/global.css'

createApp(App).use(createPinia()).use(router).mount('#app')
repairAriaGaps(document)
