import { createPinia } from 'pinia'
import { createApp } from 'vue'
import App from './App.vue'
import { repairCardHeadings } from './lib/aria-repairs'
import { router } from './router'
import './styles/global.css'

createApp(App).use(createPinia()).use(router).mount('#app')
repairCardHeadings(document)
